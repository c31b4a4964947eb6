"""`pipeline import-sat` on stable-audio-tools diffusion configs: Stable Audio Open converts whole and
builds stable-audio-tools' parameter count; every other example names each part it cannot convert."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipeline.config import load_experiment
from pipeline.config.registry import build
from pipeline.config.sat import SatImportError, import_sat_config
from tests.conftest import REPO_ROOT, SAT_CONFIGS
from tests.text import write_t5_config

SAO = SAT_CONFIGS / "model_configs__txt2audio__stable_audio_open_1_0.json"
# sum(p.numel() for p in SAT's DiffusionTransformer(**SAO's diffusion config).parameters()), built on the
# meta device from stable-audio-tools 50049e3 (tests/models/test_dit.py: SAO_PARAMETERS).
SAO_DIT_PARAMETERS = 1_056_828_544
# SAT's NumberConditioner(output_dim=768): NumberEmbedder(features=768, dim=256) = LearnedPositionalEmbedding(256)
# (128 frequencies) + Linear(257, 768): 128 + 257 * 768 + 768. SAO has two (seconds_start, seconds_total).
SAO_NUMBER_CONDITIONER_PARAMETERS = 128 + 257 * 768 + 768
# T5Conditioner('t5-base', output_dim 768): proj_out is nn.Identity (t5-base is 768 wide), and the encoder is
# kept out of the module tree: no parameters of the diffusion model.


@pytest.fixture
def sao_experiment(tmp_path, write_yaml):
    t5 = write_t5_config(tmp_path / "t5-base", d_model=768)
    sections, notes = import_sat_config(SAO, checkpoint="/models/sao/model.safetensors", t5_dir=str(t5))
    imported = write_yaml("sao.yaml", sections)
    document = {"extends": str(imported), "name": "sao", "paths": {"audio_dir": str(tmp_path / "audio")}}
    return load_experiment(write_yaml("exp.yaml", document)), sections, notes


def test_stable_audio_open_converts_to_sats_geometry_and_parameter_count(sao_experiment):
    experiment, sections, notes = sao_experiment
    model = experiment.train.model
    assert model.backbone.model_dump(include={"io_channels", "embed_dim", "depth", "num_heads"}) == {
        "io_channels": 64,
        "embed_dim": 1536,
        "depth": 24,
        "num_heads": 24,
    }
    assert (model.backbone.cond_token_dim, model.backbone.global_cond_dim, model.backbone.project_cond_tokens) == (
        768,
        1536,
        False,
    )
    assert [(c.id, c.type) for c in model.conditioners] == [
        ("prompt", "t5"),
        ("seconds_start", "number"),
        ("seconds_total", "number"),
    ]
    assert model.conditioners[0].max_length == 128 and model.conditioners[0].mask_padding is False
    assert model.cross_attention_cond_ids == ("prompt", "seconds_start", "seconds_total")
    assert model.global_cond_ids == ("seconds_start", "seconds_total")
    assert (model.objective, model.cond_dim) == ("v", 768)
    assert experiment.train.data.normalise == "none" and experiment.train.data.crop_frames == 2097152 // 2048
    assert str(experiment.train.init_from) == "/models/sao/model.safetensors"
    assert experiment.autoencoder.checkpoint_prefix == "pretransform.model."
    assert str(experiment.autoencoder.checkpoint) == "/models/sao/model.safetensors"
    assert experiment.train.optimizer.lr == 5e-5
    assert any("InverseLR" in note for note in notes)
    with torch.device("meta"):
        diffusion = build("model", model, io_channels=64)
    assert sum(p.numel() for p in diffusion.model.parameters()) == SAO_DIT_PARAMETERS
    assert sum(p.numel() for p in diffusion.parameters()) == (
        SAO_DIT_PARAMETERS + 2 * SAO_NUMBER_CONDITIONER_PARAMETERS
    )


def test_without_t5_dir_the_note_says_which_field_to_set():
    sections, notes = import_sat_config(SAO)
    assert "model_dir" not in sections["train"]["model"]["conditioners"][0]
    assert any("train.model.conditioners[0].model_dir" in note for note in notes)


@pytest.mark.parametrize(
    "name, fragments",
    [
        (
            "model_configs__txt2audio__stable_audio_1_0.json",
            [
                "4 problem(s)",  # its dac pretransform maps to type: import (issue 16)
                "model.diffusion.type 'adp_cfg_1d' is not supported",
                "configs[0] (id 'prompt'): conditioner type 'clap_text' is not supported (CLAP",
                "configs[1] (id 'seconds_start'): conditioner type 'int'",
                "configs[2] (id 'seconds_total'): conditioner type 'int'",
                "supported: label, number, t5",
            ],
        ),
        ("model_configs__txt2audio__stable_audio_2_0.json", ["1 problem(s)", "clap_text"]),
        (
            "model_configs__dance_diffusion__dance_diffusion_base.json",
            ["2 problem(s)", "has no model.pretransform", "model.type 'DAU1d' is not supported", "supported: dit"],
        ),
    ],
)
def test_unsupported_parts_are_each_named(name, fragments):
    with pytest.raises(SatImportError) as caught:
        import_sat_config(SAT_CONFIGS / name)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_cli_lists_every_problem_without_a_traceback():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "import-sat",
            str(SAT_CONFIGS / "model_configs__txt2audio__stable_audio_1_0.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "adp_cfg_1d" in result.stderr and "clap_text" in result.stderr and "'int'" in result.stderr
