"""`pipeline train-autoencoder`: it learns (large drop of the loss on audio it never saw), writes our
format, logs metrics, resumes after SIGKILL from the last checkpoint, restarts on a config change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soxr
import torch

from pipeline.audio.demo import plan_pieces, render_piece
from pipeline.autoencoder import experiment_autoencoder
from pipeline.config import load_experiment, stage_hash
from pipeline.models.autoencoder.checkpoints import load_saved, read_saved_description
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.train.autoencoder import run_files, train_autoencoder
from pipeline.train.losses import ReconstructionLoss
from tests.conftest import REPO_ROOT


def last_checkpoint(experiment) -> Path | None:
    kept = run_files(experiment).step_checkpoints()
    return kept[-1][1] if kept else None


FAST = {"steps": 150, "eval_every": 75, "checkpoint_every": 75, "log_every": 25}


def unseen_audio(rate: int, crop: int, count: int = 6) -> torch.Tensor:
    """Crops of new demo music (another seed than the training corpus), mono at `rate`."""
    crops = []
    for spec in plan_pieces(seed=777, total_seconds=60)[:count]:
        mono = render_piece(spec, seed=777).mean(axis=1)
        audio = soxr.resample(mono, spec.sample_rate, rate).astype(np.float32)
        middle = len(audio) // 2
        crops.append(audio[middle : middle + crop])
    return torch.from_numpy(np.stack(crops))[:, None, :]


def reconstruction_loss(model: Autoencoder, audio: torch.Tensor) -> float:
    criterion = ReconstructionLoss(model.sample_rate, audio.shape[-1], 1.0, 1.0, (1024, 512, 256, 128, 64), 1.0, 64)
    with torch.inference_mode():
        return float(criterion(model.decode(model.encode(audio))[..., : audio.shape[-1]], audio)[0])


def test_training_clearly_lowers_the_loss_on_unseen_audio(sharded_experiment):
    experiment = load_experiment(sharded_experiment(training=FAST))
    result = train_autoencoder(experiment, progress=False)
    assert result.step == 150 and result.exported is not None and result.exported.is_file()

    trained = experiment_autoencoder(experiment)
    assert torch.equal(
        trained.state_dict()["decoder.layers.0.bias"], load_saved(result.exported).state_dict()["decoder.layers.0.bias"]
    )
    torch.manual_seed(experiment.seed)
    untrained = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    audio = unseen_audio(experiment.data.sample_rate, crop=8192)
    before, after = reconstruction_loss(untrained, audio), reconstruction_loss(trained, audio)
    assert after < 0.6 * before, (before, after)  # measured ~0.45x at 150 steps

    records = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 3 and evals[-1] < 0.6 * evals[0]
    assert result.first_eval_loss == evals[0] and result.eval_loss == evals[-1]
    assert all(r["kl"] >= 0 for r in records if "kl" in r)
    assert [r["step"] for r in records if "loss" in r] == [25, 50, 75, 100, 125, 150]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=REPO_ROOT, **kwargs
    )


def test_sigkill_then_rerun_resumes_from_the_last_checkpoint(sharded_experiment):
    path = sharded_experiment(training=dict(steps=40, checkpoint_every=10, eval_every=20, log_every=5))
    experiment = load_experiment(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train-autoencoder", str(path), "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while last_checkpoint(experiment) is None:
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # some steps past the checkpoint
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    weights = experiment.work_dir / "autoencoder" / "model.safetensors"
    assert not weights.exists()  # no final weights until the last step
    saved_step = torch.load(last_checkpoint(experiment), weights_only=True)["step"]
    assert 10 <= saved_step < 40

    rerun = _cli("train-autoencoder", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert f"from step {saved_step}" in rerun.stdout
    assert "step 40/40" in rerun.stdout and weights.is_file()
    records = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    loss_steps = [r["step"] for r in records if "loss" in r]
    assert loss_steps == list(range(5, 45, 5))  # no step logged twice, none missing
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 20, 40]
    assert not [p for p in weights.parent.rglob("*") if ".tmp-" in p.name]


def test_a_config_change_starts_a_new_run_and_keeps_the_old_one(sharded_experiment):
    path = sharded_experiment(training=dict(steps=30, checkpoint_every=5, eval_every=10, log_every=5))
    experiment = load_experiment(path)
    first = _cli("train-autoencoder", str(path), "--quiet", "--max-steps", "10")
    assert first.returncode == 0, first.stderr
    assert "step 10/30" in first.stdout and "rerun to continue" in first.stdout
    old_run = run_files(experiment).directory
    old_metrics = run_files(experiment).metrics.read_text()
    changed = _cli("train-autoencoder", str(path), "--quiet", "--max-steps", "5", "autoencoder.training.kl_weight=0.01")
    assert changed.returncode == 0, changed.stderr
    assert f"other runs kept in {old_run.parent}: {old_run.name}" in changed.stdout and "step 5/30" in changed.stdout
    assert torch.load(last_checkpoint(experiment), weights_only=True)["step"] == 10  # untouched
    assert run_files(experiment).metrics.read_text() == old_metrics
    back = _cli("train-autoencoder", str(path), "--quiet", "--max-steps", "15")  # the first config again
    assert back.returncode == 0, back.stderr
    assert "resuming run" in back.stdout and "from step 10" in back.stdout and "step 15/30" in back.stdout


def test_raising_steps_continues_a_finished_run(sharded_experiment):
    path = sharded_experiment(training=dict(steps=6, checkpoint_every=3, eval_every=3, log_every=3))
    experiment = load_experiment(path)
    first = _cli("train-autoencoder", str(path), "--quiet")
    assert first.returncode == 0 and "step 6/6" in first.stdout, first.stderr
    weights = experiment.work_dir / "autoencoder" / "model.safetensors"
    assert read_saved_description(weights)["stage_hash"] == stage_hash(experiment, "train_autoencoder")
    raised = _cli("train-autoencoder", str(path), "--quiet", "autoencoder.training.steps=9")
    assert raised.returncode == 0, raised.stderr
    assert "from step 6" in raised.stdout and "step 9/9" in raised.stdout
    longer = load_experiment(path, ["autoencoder.training.steps=9"])
    assert read_saved_description(weights)["stage_hash"] == stage_hash(longer, "train_autoencoder")
    records = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [3, 6, 9]
    lowered = _cli("train-autoencoder", str(path), "--quiet", "autoencoder.training.steps=4")
    assert lowered.returncode == 1 and "beyond autoencoder.training.steps (4)" in lowered.stderr
    assert "Traceback" not in lowered.stderr


def test_divergence_stops_with_an_error_and_keeps_the_last_good_checkpoint(sharded_experiment):
    path = sharded_experiment(
        training=dict(steps=40, learning_rate=10.0, grad_clip=None, checkpoint_every=1, eval_every=40, log_every=1)
    )
    experiment = load_experiment(path)
    result = _cli("train-autoencoder", str(path), "--quiet")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "training diverged and stops" in result.stderr and "Traceback" not in result.stderr
    assert "learning_rate" in result.stderr and "no weights are exported" in result.stderr
    assert not (experiment.work_dir / "autoencoder" / "model.safetensors").exists()
    state = torch.load(last_checkpoint(experiment), weights_only=True)
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())
    assert f"the last good checkpoint (step {state['step']}) is kept" in result.stderr


def test_a_configured_checkpoint_and_training_together_are_a_config_error(sharded_experiment, tmp_path):
    path = sharded_experiment(training=dict(steps=1))
    result = _cli("train-autoencoder", str(path), f"autoencoder.checkpoint={tmp_path / 'pretrained.safetensors'}")
    assert result.returncode == 2 and "autoencoder.training" in result.stderr and "Traceback" not in result.stderr


def test_rvq_trains_with_its_commitment_loss(sharded_experiment):
    path = sharded_experiment(
        training=dict(steps=3, log_every=1, eval_every=3, checkpoint_every=3),
        autoencoder={
            "model": {
                "bottleneck": {"type": "rvq", "num_quantizers": 2, "codebook_size": 32},
                "encoder": {"latent_dim": 16},
            }
        },
        train=None,  # the demo's diffusion model needs continuous latents
    )
    experiment = load_experiment(path)
    result = train_autoencoder(experiment, progress=False)
    records = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    assert [r["step"] for r in records if "commitment_loss" in r] == [1, 2, 3]
    assert all(r["commitment_loss"] >= 0 for r in records if "commitment_loss" in r)
    model = load_saved(result.exported)
    assert model.is_discrete and model.n_codebooks == 2
