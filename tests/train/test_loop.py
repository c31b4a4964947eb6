"""The one training loop, on a tiny DiT over real latent stores and a tiny LM over real code stores:
exact resume after SIGKILL and after SIGUSR1 (both families), new runs on a config change and
continued runs on more steps (both families), divergence, the checkpoints kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.config import load_experiment
from pipeline.layout import layout_of
from pipeline.train.loop import EXIT_REQUEUE
from pipeline.train.stage import run_files, train_stage
from tests.conftest import REPO_ROOT

RESUME = {"steps": 60, "checkpoint_every": 30, "eval_every": 30, "data": {"num_workers": 1}}
FAMILIES = pytest.mark.parametrize("family", ["diffusion", "lm"])  # the `family` fixture of train_experiment


def start_training(experiment_file: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", str(experiment_file), "--quiet", *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended before the condition held:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def final_state(experiment) -> dict:
    files = run_files(experiment)
    step, path = files.step_checkpoints()[-1]
    return torch.load(path, weights_only=True)


def logged(experiment, name: str) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    return [(line["step"], line[name]) for line in lines if name in line]


def assert_same_run(a, b) -> None:
    first, second = final_state(a), final_state(b)
    assert first["step"] == second["step"]
    for part in ("model", "ema"):
        for name, tensor in first[part].items():
            assert torch.equal(tensor, second[part][name]), f"{part}.{name} differs"
    assert logged(a, "loss") == logged(b, "loss")
    assert logged(a, "eval_loss") == logged(b, "eval_loss")


@pytest.fixture
def straight_run(train_experiment):
    """An uninterrupted reference run of RESUME."""
    path = train_experiment(RESUME, name="straight")
    experiment = load_experiment(path)
    result = train_stage(experiment, progress=False)
    assert result.step == 60 and result.exported is not None
    return experiment


def moved_to_own_work_dir(train_experiment, tmp_path, name: str) -> Path:
    """The same experiment over a second copy of the stores (runs must not share a directory)."""
    import shutil

    other = tmp_path / f"work-{name}"
    shutil.copytree(tmp_path / "work", other, symlinks=True, ignore=shutil.ignore_patterns("train"))
    return train_experiment(RESUME, name=name, paths={"work_dir": str(other)})


@FAMILIES
def test_sigkill_then_restart_equals_an_uninterrupted_run(straight_run, train_experiment, tmp_path):
    path = moved_to_own_work_dir(train_experiment, tmp_path, "killed")
    experiment = load_experiment(path)
    files = run_files(experiment)
    process = start_training(path)
    wait_for(lambda: any(step == 30 for step, _ in files.step_checkpoints()), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not layout_of(experiment).exported_model.exists(), "the run finished before it was killed"

    restarted = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", str(path), "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "resuming run" in restarted.stdout and "from step 30" in restarted.stdout
    assert_same_run(straight_run, experiment)


@FAMILIES
def test_sigusr1_saves_exits_for_requeue_and_the_restart_continues(straight_run, train_experiment, tmp_path):
    path = moved_to_own_work_dir(train_experiment, tmp_path, "signalled")
    experiment = load_experiment(path)
    files = run_files(experiment)
    process = start_training(path)
    wait_for(lambda: files.metrics.is_file() and len(logged(experiment, "loss")) >= 5, process)
    process.send_signal(signal.SIGUSR1)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == EXIT_REQUEUE, output
    assert "stopped by SIGUSR1" in output
    stopped_at = files.step_checkpoints()[-1][0]
    assert 5 <= stopped_at < 60

    result = train_stage(experiment, progress=False)
    assert result.resumed_from == stopped_at and result.step == 60
    assert_same_run(straight_run, experiment)


@FAMILIES
def test_more_steps_continue_a_run_and_a_changed_config_starts_another(train_experiment):
    experiment = load_experiment(train_experiment({"steps": 10}))
    first = train_stage(experiment, progress=False)
    assert first.step == 10 and first.exported is not None

    longer = load_experiment(train_experiment({"steps": 20}))
    assert run_files(longer) == run_files(experiment)
    continued = train_stage(longer, progress=False)
    assert continued.resumed_from == 10 and continued.step == 20

    changed = load_experiment(train_experiment({"steps": 20, "optimizer": {"lr": 5e-4}}))
    assert run_files(changed) != run_files(experiment)
    fresh = train_stage(changed, progress=False, max_steps=10)
    assert fresh.resumed_from is None and fresh.step == 10
    assert run_files(experiment).step_checkpoints(), "the first run's checkpoints were touched"
    kept = [step for step, _ in run_files(longer).step_checkpoints()]
    assert kept == [10, 20]  # keep_checkpoints: 2

    shorter = load_experiment(train_experiment({"steps": 5}))
    with pytest.raises(Exception, match="beyond train.steps"):
        train_stage(shorter, progress=False)


def test_a_diverging_run_stops_with_an_error_and_keeps_its_checkpoint(train_experiment):
    experiment = load_experiment(train_experiment({"steps": 40, "grad_clip": None, "optimizer": {"lr": 10.0}}))
    from pipeline.train.loop import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="diverged") as caught:
        train_stage(experiment, progress=False)
    assert "Lower train.optimizer.lr" in str(caught.value)
    assert not layout_of(experiment).exported_model.exists()


def test_optimizer_options_are_checked_before_step_zero(train_experiment):
    experiment = load_experiment(train_experiment({"optimizer": {"options": {"betaz": [0.9, 0.99]}}}))
    from pipeline.errors import UserFacingError

    with pytest.raises(UserFacingError, match="train.optimizer.options.*betaz"):
        train_stage(experiment, progress=False)


def test_raising_steps_under_a_schedule_says_the_schedule_keeps_its_length(train_experiment, capsys):
    cosine = {"scheduler": {"name": "CosineAnnealingLR", "warmup_steps": 2}, "checkpoint_every": 3}
    assert train_stage(load_experiment(train_experiment({**cosine, "steps": 6})), progress=False).step == 6
    capsys.readouterr()
    assert train_stage(load_experiment(train_experiment({**cosine, "steps": 9})), progress=False).step == 9
    said = capsys.readouterr().out
    assert "train.steps changed from 6 to 9" in said and "CosineAnnealingLR schedule continues" in said
