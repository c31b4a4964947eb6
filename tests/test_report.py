"""`pipeline report-figures`: the loss curves, latent statistics and samples page, on real files the
tests write (metrics.jsonl through the training loop's own MetricsLog, an index through the store
writer, WAVs through the sample stage's audio writer)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.audio.io import write_audio
from pipeline.cli import main
from pipeline.config import load_experiment
from pipeline.errors import UserFacingError
from pipeline.layout import Layout, RunFiles
from pipeline.report import (
    PARTS,
    available_parts,
    latent_csv,
    latent_table_html,
    plot_latents,
    plot_loss_curve,
    read_latent_summary,
    read_metrics,
    samples_page,
    write_report_figures,
)
from pipeline.train.loop import MetricsLog
from pipeline.utils.atomic import sha256_file
from tests.conftest import DEMO_EXPERIMENT
from tests.latents.stores import LATENT_DIM, LATENT_RATE, write_test_index, write_test_store

SVG = "{http://www.w3.org/2000/svg}"


def write_metrics(directory: Path, steps: int = 60, eval_every: int = 20, negative: bool = False) -> Path:
    """A run's metrics.jsonl as the loop writes it: eval at 0, loss + lr every step, evals, checkpoints."""
    log = MetricsLog(RunFiles(directory), enabled=True, step=0, tensorboard=False)
    log.write({"step": 0, "eval_loss": 2.0})
    for step in range(1, steps + 1):
        loss = (-1.0 if negative else 1.0) / step
        lr = 1e-3 * (1 - step / steps)
        log.write({"step": step, "loss": loss, "mse": loss, "grad_norm": 0.5, "lr": lr, "steps_per_s": 4.0})
        if step % eval_every == 0:
            log.write({"step": step, "eval_loss": 2.0 / step})
            log.write({"step": step, "checkpoint": str(directory / f"step-{step:09d}.pt")})
    log.close()
    return RunFiles(directory).metrics


def svg_texts(path: Path) -> str:
    """Every text of an SVG (which must parse as XML), joined."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return " ".join("".join(element.itertext()) for element in root.iter(f"{SVG}text"))


# --- loss curves ------------------------------------------------------------------------------------
def test_read_metrics_takes_loss_eval_and_lr_in_step_order(tmp_path):
    metrics = read_metrics(write_metrics(tmp_path / "run", steps=60, eval_every=20))
    assert metrics.loss.steps.tolist() == list(range(1, 61))
    np.testing.assert_allclose(metrics.loss.values, [1.0 / step for step in range(1, 61)])
    assert metrics.eval_loss.steps.tolist() == [0, 20, 40, 60]
    np.testing.assert_allclose(metrics.eval_loss.values, [2.0, 0.1, 0.05, 2.0 / 60])
    assert metrics.lr.steps.tolist() == list(range(1, 61)) and metrics.lr.values[-1] == 0.0
    assert metrics.last_step == 60


def test_loss_curve_is_an_svg_with_both_losses_log_scale_and_the_learning_rate(tmp_path):
    figure = plot_loss_curve(write_metrics(tmp_path / "run"), tmp_path / "out" / "loss.svg", "train (diffusion model)")
    assert figure.path == tmp_path / "out" / "loss.svg"
    assert figure.log_scale and figure.with_lr
    texts = svg_texts(figure.path)
    for wanted in ("train (diffusion model): step 60", "held-out loss (eval_loss)", "learning rate", "step"):
        assert wanted in texts
    assert "mean of" in texts  # 60 points: the moving average is drawn too
    assert not list((tmp_path / "out").glob(".*tmp*"))  # written atomically: no temp file left


def test_loss_curve_is_linear_when_a_loss_is_not_positive_and_deterministic(tmp_path):
    metrics = write_metrics(tmp_path / "run", steps=10, eval_every=5, negative=True)
    first = plot_loss_curve(metrics, tmp_path / "a.svg", "run")
    second = plot_loss_curve(metrics, tmp_path / "b.svg", "run")
    assert not first.log_scale
    assert first.path.read_bytes() == second.path.read_bytes()  # no date, fixed ids


def test_loss_curve_without_learning_rate_has_one_panel(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "eval_loss": 1.5}\n{"step": 5, "eval_loss": 1.0}\n')
    figure = plot_loss_curve(path, tmp_path / "loss.svg", "run")
    assert not figure.with_lr and "learning rate" not in svg_texts(figure.path)


def test_missing_or_malformed_metrics_are_errors_naming_the_file(tmp_path):
    missing = tmp_path / "runs" / "abc" / "metrics.jsonl"
    with pytest.raises(UserFacingError, match=re.escape(str(missing)) + ": no such file.*train first"):
        read_metrics(missing)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n')
    with pytest.raises(UserFacingError, match=re.escape(f"{broken}:2 is not JSON")):
        read_metrics(broken)
    stepless = tmp_path / "stepless.jsonl"
    stepless.write_text('{"loss": 0.5}\n')
    with pytest.raises(UserFacingError, match=re.escape(f"{stepless}:1 has no integer 'step'")):
        read_metrics(stepless)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"step": 2, "checkpoint": "x.pt"}\n')
    with pytest.raises(UserFacingError, match=re.escape(f"{empty} holds no 'loss' or 'eval_loss'")):
        read_metrics(empty)


# --- latent statistics ---------------------------------------------------------------------------------
@pytest.fixture
def index(tmp_path) -> Path:
    latents = tmp_path / "work" / "latents"
    stores = [
        write_test_store(latents / "shard-000000.h5", [10, 20, 5], seed=1, loc=1.0),
        write_test_store(latents / "shard-000001.h5", [8, 40], seed=2),
    ]
    return write_test_index(latents, stores)


def test_latent_summary_reads_the_index_and_its_statistics(index):
    import h5py

    summary = read_latent_summary(index)
    assert (summary.items, summary.frames, summary.shards, summary.kind) == (5, 83, 2, "index")
    assert summary.latent_dim == LATENT_DIM and summary.latent_rate == pytest.approx(LATENT_RATE)
    assert summary.seconds == pytest.approx(83 / LATENT_RATE)
    np.testing.assert_allclose(sorted(summary.item_seconds), np.array(sorted([10, 20, 5, 8, 40])) / LATENT_RATE)
    with h5py.File(index, "r") as file:
        np.testing.assert_allclose(summary.mean, file["stats/mean"][()])
        np.testing.assert_allclose(summary.std, file["stats/std"][()])
        assert summary.stats_frames == int(file["stats/frames"][()]) == 83


def test_latent_figure_table_and_csv(index, tmp_path):
    summary = read_latent_summary(index)
    figure = plot_latents(summary, tmp_path / "latents.svg")
    texts = svg_texts(figure)
    assert "5 items, 83 latent frames" in texts and "in 2 shard store(s)" in texts
    assert "per-channel statistics over 83 frames" in texts and "item duration (s)" in texts
    page = latent_table_html(summary)
    for wanted in ("<th>items</th><td>5</td>", "<th>latent frames</th><td>83</td>", "<th>shard stores</th><td>2</td>"):
        assert wanted in page
    assert page.count("<tr><td>") == LATENT_DIM  # one row per channel
    rows = list(csv.DictReader(io.StringIO(latent_csv(summary))))
    assert [int(row["channel"]) for row in rows] == list(range(LATENT_DIM))
    np.testing.assert_allclose([float(row["mean"]) for row in rows], summary.mean)
    np.testing.assert_allclose([float(row["std"]) for row in rows], summary.std)


def test_discrete_index_has_no_channel_statistics(tmp_path):
    latents = tmp_path / "latents"
    index = write_test_index(latents, [write_test_store(latents / "shard-000000.h5", [6, 4], discrete=True)])
    summary = read_latent_summary(index)
    assert summary.discrete and summary.mean is None and summary.std is None
    assert "no per-channel statistics (discrete codes)" in svg_texts(plot_latents(summary, tmp_path / "codes.svg"))
    assert latent_csv(summary) == "channel,mean,std\n"
    assert "Per-channel" not in latent_table_html(summary)


def test_missing_index_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "latents" / "index.h5"
    with pytest.raises(UserFacingError, match=re.escape(str(missing)) + ": no such file.*pipeline index EXP"):
        read_latent_summary(missing)


# --- samples --------------------------------------------------------------------------------------------
def write_samples(directory: Path, count: int = 2) -> Path:
    """WAVs and a samples.json shaped as `pipeline sample` writes them."""
    files = []
    for number in range(count):
        path = directory / f"sample-{number:04d}.wav"
        directory.mkdir(parents=True, exist_ok=True)
        tone = 0.3 * np.sin(np.linspace(0, 200 * (number + 1), 1600))[:, None]
        write_audio(path, tone, 16000, "WAV", "PCM_16")
        files.append({"path": path.name, "sha256": sha256_file(path)})
    settings = {"count": count, "seconds": 0.1, "seed": 7, "steps": 2, "sampler": None, "cfg_scale": 2.0}
    record = {"settings": settings, "model_stage_hash": "abc123", "sample_rate": 16000, "channels": 1, "files": files}
    (directory / "samples.json").write_text(json.dumps(record))
    return directory / "samples.json"


def embedded_audio(page: str) -> list[bytes]:
    return [
        base64.b64decode(data) for data in re.findall(r'<audio controls[^>]* src="data:audio/wav;base64,([^"]+)"', page)
    ]


def test_samples_page_embeds_every_wav_and_the_settings(tmp_path):
    settings = write_samples(tmp_path / "samples", count=3)
    page = samples_page(settings)
    assert embedded_audio(page) == [(tmp_path / "samples" / f"sample-{n:04d}.wav").read_bytes() for n in range(3)]
    assert (
        "Samples (3 files)" in page and "<th>seed</th><td>7</td>" in page and "<th>cfg_scale</th><td>2.0</td>" in page
    )


def test_samples_page_refuses_a_changed_or_missing_wav(tmp_path):
    settings = write_samples(tmp_path / "samples")
    changed = tmp_path / "samples" / "sample-0001.wav"
    changed.write_bytes(changed.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(UserFacingError, match=re.escape(f"{changed} changed since {settings}")):
        samples_page(settings)
    changed.unlink()
    with pytest.raises(UserFacingError, match=re.escape(f"{changed}: no such file, but {settings} lists it")):
        samples_page(settings)
    with pytest.raises(UserFacingError, match="no such file; generate the samples first"):
        samples_page(tmp_path / "elsewhere" / "samples.json")


# --- the command -------------------------------------------------------------------------------------
def experiment_file(tmp_path: Path, **sections) -> Path:
    document = {"extends": str(DEMO_EXPERIMENT), "paths": {"audio_dir": "audio", "work_dir": str(tmp_path / "work")}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**document, **sections}))
    return path


def test_available_parts_follow_the_experiment(tmp_path):
    assert available_parts(load_experiment(experiment_file(tmp_path))) == list(PARTS)
    pretrained = {"checkpoint": str(tmp_path / "ae.safetensors"), "training": None}
    assert available_parts(load_experiment(experiment_file(tmp_path, train=None))) == ["autoencoder", "latents"]
    assert available_parts(load_experiment(experiment_file(tmp_path, train=None, autoencoder=pretrained))) == [
        "latents"
    ]
    assert available_parts(load_experiment(experiment_file(tmp_path, train=None, autoencoder=None))) == []


def test_cli_takes_every_part_and_only_those():
    from pipeline.cli import build_parser

    parser = build_parser()
    for part in PARTS:
        assert parser.parse_args(["report-figures", "exp.yaml", "--part", part]).part == [part]
    with pytest.raises(SystemExit):
        parser.parse_args(["report-figures", "exp.yaml", "--part", "plots"])


def test_command_writes_the_parts_it_is_asked_for(tmp_path, index, capsys):
    from pipeline.train.stage import run_files

    path = experiment_file(tmp_path)
    experiment = load_experiment(path)
    layout = Layout(tmp_path / "work")
    assert index == layout.index
    write_metrics(run_files(experiment).directory)
    assert main(["report-figures", str(path), "--part", "training", "--part", "latents"]) == 0
    written = capsys.readouterr().out
    for file in (
        layout.report_training_loss,
        layout.report_latents_figure,
        layout.report_latents_table,
        layout.report_latents_csv,
    ):
        assert f"report: wrote {file}" in written and file.is_file()
    assert "train (diffusion model): step 60" in svg_texts(layout.report_training_loss)
    assert not layout.report_samples.exists()
    # The samples are not there: one line naming the file, exit 1.
    assert main(["report-figures", str(path), "--part", "samples"]) == 1
    assert f"{layout.samples_settings}: no such file" in capsys.readouterr().err


def test_a_part_the_experiment_lacks_is_an_error(tmp_path):
    experiment = load_experiment(experiment_file(tmp_path, train=None))
    with pytest.raises(UserFacingError, match="has no training report: it has no train section"):
        write_report_figures(experiment, ["training"])
    with pytest.raises(UserFacingError, match="no report part 'plots'"):
        write_report_figures(experiment, ["plots"])
