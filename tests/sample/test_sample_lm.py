"""`pipeline sample` with an LM over the discrete demo's code stores (a tiny LM, 20 steps): WAV files at
the autoencoder's rate, channel count and length, samples.json with the LM's settings, determinism
(seed), greedy decoding that ignores the draws, and one-line errors for flags an LM cannot take."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from pipeline.config import load_experiment
from pipeline.layout import layout_of
from tests.sample.test_sample import pipeline_sample, wav_bytes
from tests.train.conftest import encoded_codes_work  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

SAMPLE = {"count": 3, "seconds": 0.3, "seed": 7, "batch_size": 2, "device": "cpu", "cfg_scale": 2.0, "top_k": 16}


@pytest.fixture(scope="module")
def trained_lm(tmp_path_factory, encoded_codes_work) -> Path:  # noqa: F811
    """A work dir with an exported tiny LM (20 steps on the discrete demo's code stores); tests copy it."""
    from pipeline.train.stage import train_stage
    from tests.train.conftest import TINY_LM_TRAIN

    work, document = encoded_codes_work
    base = tmp_path_factory.mktemp("trained_lm")
    shutil.copytree(work, base / "work", symlinks=True)
    path = base / "exp.yaml"
    document = {**document, "paths": {**document["paths"], "work_dir": str(base / "work")}, "train": TINY_LM_TRAIN}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = train_stage(load_experiment(path), progress=False)
    assert result.exported is not None
    return path


@pytest.fixture
def experiment_file(trained_lm, tmp_path) -> Path:
    document = yaml.safe_load(trained_lm.read_text(encoding="utf-8"))
    shutil.copytree(trained_lm.parent / "work", tmp_path / "work", symlinks=True)
    document["paths"]["work_dir"] = str(tmp_path / "work")
    document["sample"] = {**document.get("sample", {}), **SAMPLE}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_sample_writes_wavs_at_the_autoencoders_rate_channels_and_length(experiment_file):
    run = pipeline_sample(experiment_file)
    assert run.returncode == 0, run.stdout + run.stderr
    experiment = load_experiment(experiment_file)
    layout = layout_of(experiment)
    files = sorted(layout.samples_dir.glob("sample-*.wav"))
    assert [path.name for path in files] == ["sample-0000.wav", "sample-0001.wav", "sample-0002.wav"]
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, round(0.3 * 16000))
        assert info.subtype == "PCM_16"
        audio, _ = sf.read(str(path))
        assert audio.std() > 0  # decoded codes, not silence
    record = json.loads(layout.samples_settings.read_text())
    assert record["settings"]["top_k"] == 16 and record["settings"]["temperature"] == 1.0
    assert (record["sample_rate"], record["channels"]) == (16000, 1)
    assert len(record["files"]) == 3


def test_the_same_seed_gives_the_same_files_and_another_seed_differs(experiment_file):
    experiment = load_experiment(experiment_file)
    assert pipeline_sample(experiment_file).returncode == 0
    first = wav_bytes(experiment)
    assert pipeline_sample(experiment_file).returncode == 0
    assert wav_bytes(experiment) == first
    assert pipeline_sample(experiment_file, "--seed", "8").returncode == 0
    other = wav_bytes(experiment)
    assert all(other[name] != first[name] for name in first)


def test_greedy_decoding_ignores_the_draws(experiment_file):
    """Temperature 0 takes the most likely code at every step: every file of one conditioning is the same
    (in one batch: the decoder's rounding at another batch shape may move a sample by 1 LSB)."""
    experiment = load_experiment(experiment_file)
    run = pipeline_sample(experiment_file, "sample.batch_size=3", "--temperature", "0")
    assert run.returncode == 0, run.stdout + run.stderr
    files = list(wav_bytes(experiment).values())
    assert len(files) == 3 and files[0] == files[1] == files[2]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--sampler", "euler"], ["sample.sampler", "diffusion sampler"]),
        (["--top-p", "1.5"], ["sample.top_p", "less than or equal to 1"]),
        (["--temperature", "-1"], ["sample.temperature"]),
    ],
)
def test_a_flag_an_lm_cannot_take_is_one_clear_line(experiment_file, capsys, flags, named):
    from pipeline.cli import main

    assert main(["sample", str(experiment_file), "--quiet", *flags]) == 1
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1, stderr
    for name in named:
        assert name in stderr, f"{name!r} not in {stderr}"
