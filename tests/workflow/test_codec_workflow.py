"""An experiment whose autoencoder brings its own weights (a codec through transformers): the workflow
plans no autoencoder training, and pre-encoding takes the codec's weights file as its input."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.byo import byo_experiment, write_codec
from tests.conftest import REPO_ROOT

pytest.importorskip("transformers")


def test_a_codec_experiment_plans_no_autoencoder_training_and_encodes_with_the_codec_weights(tmp_path, training_audio):
    from tests.train.conftest import TINY_LM_TRAIN

    codec = write_codec(tmp_path / "encodec", "encodec")
    experiment = byo_experiment(
        tmp_path,
        training_audio,
        {"type": "encodec", "path": str(codec), "bandwidth": 16.0},
        train={**TINY_LM_TRAIN, "steps": 4, "eval_every": 2, "checkpoint_every": 2, "batch_size": 4},
        sample={"count": 2, "seconds": 0.05, "top_k": 8},
    )
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    result = subprocess.run(
        [snakemake, "--profile", "profiles/local", "-n", "--config", f"experiment={experiment}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    planned = set(re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", output, re.MULTILINE))
    assert "train_autoencoder" not in planned
    assert {"pre_encode_one", "index", "train_model", "sample_audio"} <= planned, planned
    encode_inputs = re.findall(r"rule pre_encode_one:\n\s+input: (.*)", output)
    assert encode_inputs and all(str(codec / "model.safetensors") in line for line in encode_inputs), encode_inputs
