"""`pipeline sample` after a short training run on real stores: the files, their format and length,
samples.json, determinism (seed, batch size), conditioning from `--set`, and the clear errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from pipeline.config import load_experiment
from pipeline.layout import layout_of
from tests.conftest import REPO_ROOT
from tests.train.conftest import encoded_work, train_experiment  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

SAMPLE = {"count": 3, "seconds": 0.3, "steps": 4, "seed": 7, "batch_size": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, encoded_work) -> Path:  # noqa: F811
    """A work dir with an exported tiny DiT (20 steps on the demo stores); tests copy it."""
    from pipeline.train.stage import train_stage
    from tests.train.conftest import TINY_TRAIN

    work, document = encoded_work
    base = tmp_path_factory.mktemp("trained")
    shutil.copytree(work, base / "work", symlinks=True)
    path = base / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {**document, "paths": {**document["paths"], "work_dir": str(base / "work")}, "train": TINY_TRAIN}
        ),
        encoding="utf-8",
    )
    result = train_stage(load_experiment(path), progress=False)
    assert result.exported is not None
    return path


@pytest.fixture
def experiment_file(trained, tmp_path) -> Path:
    """A copy of the trained work dir and its experiment, with SAMPLE as the sample section."""
    document = yaml.safe_load(trained.read_text(encoding="utf-8"))
    shutil.copytree(trained.parent / "work", tmp_path / "work", symlinks=True)
    document["paths"]["work_dir"] = str(tmp_path / "work")
    document["sample"] = {**document.get("sample", {}), **SAMPLE}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def pipeline_sample(experiment_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "sample", str(experiment_file), "--quiet", *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


def wav_bytes(experiment) -> dict[str, bytes]:
    directory = layout_of(experiment).samples_dir
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.wav"))}


def settings_of(experiment, **changes):
    return experiment.sample.model_copy(update=changes)


def assert_one_line_error(run: subprocess.CompletedProcess, status: int, *names: str) -> None:
    assert run.returncode == status, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    for name in names:
        assert name in run.stderr, f"{name!r} not in: {run.stderr}"


def test_sample_writes_count_wavs_at_the_autoencoders_rate_and_length(experiment_file):
    run = pipeline_sample(experiment_file, "--count", "2", "--seconds", "0.3")
    assert run.returncode == 0, run.stdout + run.stderr
    experiment = load_experiment(experiment_file)
    layout = layout_of(experiment)
    assert "wrote 2 files" in run.stdout
    files = sorted(layout.samples_dir.glob("*.wav"))
    assert [path.name for path in files] == ["sample-0000.wav", "sample-0001.wav"]
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, round(0.3 * 16000))
        assert info.format == "WAV" and info.subtype == "PCM_16"
        audio, _ = sf.read(str(path))
        assert abs(audio).max() > 0, "silent output"
    record = json.loads(layout.samples_settings.read_text(encoding="utf-8"))
    assert record["settings"]["count"] == 2 and record["settings"]["seconds"] == 0.3
    assert (record["sample_rate"], record["channels"]) == (16000, 1)
    description = json.loads(layout.exported_description.read_text(encoding="utf-8"))
    assert record["model_stage_hash"] == description["stage_hash"]
    assert record["files"] == [
        {"path": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()} for path in files
    ]

    # A smaller count later leaves no stale files of the larger one behind.
    assert pipeline_sample(experiment_file, "--count", "1").returncode == 0
    assert [path.name for path in layout.samples_dir.glob("*.wav")] == ["sample-0000.wav"]


@pytest.mark.parametrize("seconds", [0.3, 1.0, 0.0123])
def test_every_file_has_exactly_round_seconds_times_rate_frames(experiment_file, seconds):
    from pipeline.sample.generate import sample_stage

    experiment = load_experiment(experiment_file)
    written = sample_stage(experiment, settings_of(experiment, count=1, seconds=seconds), progress=False)
    assert sf.info(str(written.files[0])).frames == round(seconds * 16000)


def test_the_same_seed_gives_the_same_files_at_any_batch_size_and_another_seed_differs(experiment_file):
    from pipeline.sample.generate import sample_stage

    experiment = load_experiment(experiment_file)
    assert experiment.sample.cfg_scale != 1.0  # the demo's guidance: the batched cond/null pass is exercised

    def files(**changes) -> dict[str, bytes]:
        sample_stage(experiment, settings_of(experiment, **changes), progress=False)
        return wav_bytes(experiment)

    first = files()
    assert len(first) == 3 and len(set(first.values())) == 3, "the files of one run must differ"
    assert files() == first
    other = files(seed=8)
    assert all(other[name] != first[name] for name in first)
    # Another batch size: the same audio up to float32 rounding, which the kernels do differently at
    # other batch shapes (measured: 5 and 7 of 14400 samples 1 LSB apart at batch sizes 1 and 3).
    reference = pcm(first)
    for batch_size in (1, 3):
        difference = np.abs(pcm(files(batch_size=batch_size)) - reference)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, f"batch size {batch_size}"


def pcm(files: dict[str, bytes]) -> np.ndarray:
    return np.stack([sf.read(io.BytesIO(data), dtype="int16")[0] for _, data in sorted(files.items())]).astype(int)


def test_set_applies_a_conditioner_value(experiment_file):
    experiment = load_experiment(experiment_file)
    layout = layout_of(experiment)
    assert pipeline_sample(experiment_file, "--count", "1", "--set", "label=flute").returncode == 0
    flute = wav_bytes(experiment)
    record = json.loads(layout.samples_settings.read_text(encoding="utf-8"))
    assert record["settings"]["conditioning"]["label"] == "flute"
    run = pipeline_sample(experiment_file, "--count", "1", "--set", "label=bell", "--set", "seconds_start=3")
    assert run.returncode == 0, run.stderr
    record = json.loads(layout.samples_settings.read_text(encoding="utf-8"))
    assert record["settings"]["conditioning"] == {"label": "bell", "seconds_start": 3}
    assert wav_bytes(experiment) != flute, "the label changed nothing"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--set", "colour=red"], ["sample.conditioning names colour", "its conditioners: label, seconds_start"]),
        (["--set", "label=piano"], ["sample.conditioning.label", "'piano'", "bell, flute, organ, pluck"]),
        (["--set", "seconds_total=long"], ["sample.conditioning.seconds_total", "not a finite number"]),
        (["--set", "label"], ["--set takes ID=VALUE", "'label'"]),
        (["--count", "0"], ["sample.count", "greater than or equal to 1"]),
        (["--sampler", "rk4"], ["sample.sampler 'rk4'", "euler, heun, ddim, dpmpp_2m"]),
    ],
)
def test_a_bad_flag_is_one_clear_line_and_keeps_the_last_samples(experiment_file, capsys, flags, named):
    from pipeline.cli import main

    experiment = load_experiment(experiment_file)
    assert main(["sample", str(experiment_file), "--quiet", "--count", "1"]) == 0
    before = wav_bytes(experiment)
    capsys.readouterr()
    assert main(["sample", str(experiment_file), "--quiet", *flags]) == 1
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1, stderr
    for name in named:
        assert name in stderr, f"{name!r} not in {stderr}"
    assert wav_bytes(experiment) == before and layout_of(experiment).samples_settings.is_file()


def test_the_record_hashes_the_settings_the_files_were_made_with(experiment_file):
    from pipeline.config import stage_hash
    from pipeline.sample.generate import sample_stage

    experiment = load_experiment(experiment_file)
    settings = settings_of(experiment, count=1, seed=99)
    sample_stage(experiment, settings, progress=False)
    record = json.loads(layout_of(experiment).samples_settings.read_text(encoding="utf-8"))
    assert record["sample_stage_hash"] == stage_hash(experiment.model_copy(update={"sample": settings}), "sample")
    assert record["sample_stage_hash"] != stage_hash(experiment, "sample")
    sample_stage(experiment, experiment.sample, progress=False)  # the section as written: the workflow's hash
    record = json.loads(layout_of(experiment).samples_settings.read_text(encoding="utf-8"))
    assert record["sample_stage_hash"] == stage_hash(experiment, "sample")


def test_a_missing_or_stale_exported_model_is_one_clear_line(experiment_file):
    experiment = load_experiment(experiment_file)
    layout = layout_of(experiment)
    document = yaml.safe_load(experiment_file.read_text(encoding="utf-8"))
    document["train"]["optimizer"]["lr"] = 5e-4
    changed = experiment_file.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert_one_line_error(pipeline_sample(changed), 1, str(layout.exported_model), "stale", "pipeline train")

    layout.exported_model.unlink()
    assert_one_line_error(pipeline_sample(experiment_file), 1, "no exported model", str(layout.exported_model))
    assert not list(layout.samples_dir.glob("*.wav"))


def test_a_model_trained_on_other_autoencoder_weights_is_stale(experiment_file, capsys):
    """Retrained autoencoder weights (same configuration, same stage hashes) would decode the model's
    latents into noise: model.json records the weights that made its latents."""
    import torch

    from pipeline.cli import main
    from pipeline.config import stage_hash
    from pipeline.models.autoencoder.checkpoints import save_autoencoder
    from pipeline.models.autoencoder.model import Autoencoder

    experiment = load_experiment(experiment_file)
    layout = layout_of(experiment)
    torch.manual_seed(4)
    other = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    save_autoencoder(other, layout.autoencoder_weights, stage_hash(experiment, "train_autoencoder"))
    assert main(["sample", str(experiment_file), "--quiet"]) == 1
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and "other autoencoder weights" in stderr and "stale" in stderr


@pytest.mark.parametrize(("seconds", "patch", "frames"), [(0.3, 1, 38), (0.296, 1, 37), (0.296, 2, 38), (0.001, 4, 4)])
def test_latent_frames_cover_the_seconds_in_whole_patches(seconds, patch, frames):
    from types import SimpleNamespace

    from pipeline.sample.generate import latent_frames

    model = SimpleNamespace(config=SimpleNamespace(backbone=SimpleNamespace(patch_size=patch)))
    assert latent_frames(seconds, 125.0, model) == frames
