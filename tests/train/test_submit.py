"""`pipeline train EXP --submit`: the job's options (from resources.train and the command line), and on
the local SLURM cluster a submitted training that is requeued from outside (`scontrol requeue`) and
one that outlives its 1-minute time limit; both resume and end with the weights of an uninterrupted
in-process run of the same experiment.

SLURM keeps a requeued job pending for cred_expire + 1 s (Reason=BeginTime; 31 s on the test cluster,
121 s by default) before it may start again, and the time-limited job is requeued several times.
While jobs of these tests run, a thread lets such a job start at once (`scontrol update
StartTime=now`): the requeue and the resume are SLURM's and the job's own, only the wait is cut.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.cli import main
from pipeline.config import load_experiment
from pipeline.errors import UserFacingError
from pipeline.layout import layout_of
from pipeline.train.checkpoints import StopSignals
from pipeline.train.loop import EXIT_REQUEUE
from pipeline.train.stage import run_files, run_hash, train_stage
from pipeline.train.submit import JobSignals, SubmitOptions, TrainJob, parse_time
from tests.conftest import REPO_ROOT, deep_merge
from tests.slurm import require_slurm, scontrol_job
from tests.train.conftest import TINY_TRAIN

TARGET_SECONDS = 70  # training the time-limited job must do: more than its 1-minute allocation on any machine
MEASURE_STEPS = 200
JOB_TIMEOUT_S = 900.0
JOB_RESOURCES = {"cpus": 1, "mem_mb": 3000}  # the node has 2 CPUs: both jobs run side by side


# --- the options: no SLURM needed -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("90", 90),
        (45, 45),
        ("1:30", 2),  # minutes:seconds, rounded up
        ("1:30:00", 90),
        ("0:59:30", 60),
        ("2-00:00:00", 2880),
        ("1-12", 2160),
        ("1-1:30", 1530),
        (" 5 ", 5),
    ],
)
def test_time_limits_are_read_as_sbatch_reads_them(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["1h", "", "1:2:3:4", "0", "0:30", "1:75", "1:00:75", "-5", "1-25", "2-0:61"])
def test_a_time_that_is_no_slurm_time_limit_is_an_error_naming_the_option(text):
    with pytest.raises(UserFacingError, match=r"--time") as caught:
        parse_time(text)
    assert repr(text) in str(caught.value)  # the value as given
    assert "1:30:00" in str(caught.value) or "1 minute" in str(caught.value)  # and what would be right


@pytest.fixture
def resourced(write_yaml, minimal):
    def make(**train_resources) -> object:
        return load_experiment(write_yaml("exp.yaml", {**minimal, "resources": {"train": train_resources}}))

    return make


def test_the_options_default_to_the_experiments_train_resources(resourced):
    experiment = resourced(cpus=3, mem_mb=1234, runtime=45, gpus=2, nodes=2, signal_seconds=100)
    options = SubmitOptions.of(experiment)
    assert (options.nodes, options.gpus_per_node, options.cpus_per_task) == (2, 2, 3)
    assert (options.mem_mb, options.time_min, options.signal_grace_s) == (1234, 45, 100)
    assert (options.tasks_per_node, options.tasks) == (2, 4)
    assert options.partition is None and options.account is None
    parameters = options.slurm_parameters("train-x")
    assert parameters["ntasks_per_node"] == 2 and parameters["gpus_per_node"] == 2 and parameters["time"] == 45
    assert parameters["mem"] == "1234M" and parameters["cpus_per_task"] == 3 and parameters["nodes"] == 2
    assert parameters["additional_parameters"] == {"signal": "USR1@100", "requeue": True}
    assert "resources.train.runtime=45" in options.resource_overrides()


def test_command_line_values_replace_the_defaults(resourced):
    experiment = resourced(cpus=3, mem_mb=1234, runtime=45, gpus=2, nodes=2, signal_seconds=100)
    options = SubmitOptions.of(
        experiment,
        nodes=1,
        gpus_per_node=0,
        partition="gpu",
        time="1:30:00",
        account="proj",
        cpus_per_task=1,
        mem_mb=500,
        signal_grace_s=30,
        max_requeues=2,
    )
    assert options == SubmitOptions(1, 0, 90, 1, 500, "gpu", "proj", 30, 2)
    assert options.tasks_per_node == 1  # no GPU: one process
    parameters = options.slurm_parameters("train-x")
    assert parameters["partition"] == "gpu" and parameters["account"] == "proj"
    assert "gpus_per_node" not in parameters


def test_a_signal_grace_not_shorter_than_the_time_limit_is_an_error_naming_both(resourced):
    experiment = resourced(signal_seconds=100)
    with pytest.raises(UserFacingError, match=r"100 s, resources.train.signal_seconds.*1 min, --time 1"):
        SubmitOptions.of(experiment, time="1")
    with pytest.raises(UserFacingError, match=r"--signal-grace"):
        SubmitOptions.of(experiment, time="1", signal_grace_s=60)
    assert SubmitOptions.of(experiment, time="1", signal_grace_s=59).signal_grace_s == 59


@pytest.mark.parametrize(
    "option, keyword, value",
    [("--nodes", "nodes", 0), ("--gpus-per-node", "gpus_per_node", -1), ("--mem-mb", "mem_mb", 0)],
)
def test_a_count_out_of_range_is_an_error_naming_its_flag(resourced, option, keyword, value):
    with pytest.raises(UserFacingError, match=rf"{option} must be at least"):
        SubmitOptions.of(resourced(), **{keyword: value})


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--nodes", "2"], "--nodes"),
        (["--time", "10", "--wait"], "--time, --wait"),
        (["--partition", "gpu"], "--partition"),
    ],
)
def test_job_options_without_submit_are_an_error_naming_them(extra, named, capsys):
    assert main(["train", "missing.yaml", *extra]) == 1
    error = capsys.readouterr().err
    assert named in error and "--submit" in error


# --- the job's signals, in this process (no SLURM needed) -----------------------------------------


def signal_once_guarded(number: int) -> threading.Thread:
    """Send `number` to this process as soon as a StopSignals guards it (the job's has been entered)."""

    def send() -> None:
        while not isinstance(getattr(signal.getsignal(signal.SIGUSR1), "__self__", None), StopSignals):
            time.sleep(0.01)
        os.kill(os.getpid(), number)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_signal_while_the_job_starts_stops_the_loop_after_its_first_step(train_experiment):
    experiment = load_experiment(train_experiment({"steps": 20}))
    with JobSignals() as job:
        signal.raise_signal(signal.SIGUSR2)  # submitit's preemption signal: passed on as SIGUSR1
        assert job.requested == "SIGUSR1"
        result = train_stage(experiment, progress=False)
    assert result.stopped_by == "SIGUSR1" and result.step == 1
    assert [step for step, _ in run_files(experiment).step_checkpoints()] == [1]


def test_a_job_stopped_by_sigterm_saves_and_leaves_the_requeue_to_slurm(train_experiment, capsys):
    path = train_experiment({"steps": 2000, "checkpoint_every": 1000})
    experiment = load_experiment(path)
    signal_once_guarded(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        TrainJob(path, [], Path.cwd(), run_hash(experiment), progress=False)()
    assert stopped.value.code == EXIT_REQUEUE
    saved = run_files(experiment).step_checkpoints()
    assert saved and saved[-1][0] < 2000
    assert f"stopped by SIGTERM at step {saved[-1][0]}/2000" in capsys.readouterr().out


def test_a_job_that_has_used_its_requeues_fails_naming_the_limit(train_experiment, monkeypatch):
    path = train_experiment({"steps": 2000, "checkpoint_every": 1000})
    experiment = load_experiment(path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # what SLURM sets in a job it has requeued 3 times
    signal_once_guarded(signal.SIGUSR1)
    with pytest.raises(UserFacingError, match=r"requeued 3 time\(s\).*--max-requeues 3"):
        TrainJob(path, [], Path.cwd(), run_hash(experiment), progress=False, max_requeues=3)()
    assert run_files(experiment).step_checkpoints()[-1][0] < 2000  # saved before it gave up


def test_a_job_whose_experiment_changed_since_submission_refuses_to_train(train_experiment):
    path = train_experiment({"steps": 20})
    with pytest.raises(UserFacingError, match=r"changed since the job was submitted.*run 0123456789abcdef"):
        TrainJob(path, [], Path.cwd(), "0123456789abcdef", progress=False)()
    assert not run_files(load_experiment(path)).step_checkpoints()


# --- on the local SLURM cluster -------------------------------------------------------------------


def copy_work(work: Path, destination: Path) -> Path:
    shutil.copytree(work, destination, symlinks=True, ignore=shutil.ignore_patterns("train"))
    return destination


def write_experiment(path: Path, document: dict, work_dir: Path, train: dict) -> Path:
    changes = {"paths": {"work_dir": str(work_dir)}, "train": train, "resources": {"train": JOB_RESOURCES}}
    path.write_text(yaml.safe_dump(deep_merge(document, changes)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sized_train(encoded_work, tmp_path_factory) -> dict:
    """The train section of these jobs: enough steps for TARGET_SECONDS of training here (measured on a
    short run), four checkpoints along the way."""
    work, document = encoded_work
    base = tmp_path_factory.mktemp("measure")
    quick = deep_merge(TINY_TRAIN, {"steps": MEASURE_STEPS, "eval_every": MEASURE_STEPS, "log_every": 100})
    experiment = load_experiment(write_experiment(base / "exp.yaml", document, copy_work(work, base / "work"), quick))
    started = time.monotonic()
    train_stage(experiment, progress=False)
    rate = MEASURE_STEPS / (time.monotonic() - started)
    steps = max(400, int(rate * TARGET_SECONDS) // 100 * 100)
    return deep_merge(
        TINY_TRAIN, {"steps": steps, "checkpoint_every": steps // 4, "eval_every": steps, "log_every": 25}
    )


@pytest.fixture(scope="module")
def reference(encoded_work, sized_train, tmp_path_factory):
    """The same experiment trained straight through, in this process, in its own work dir."""
    work, document = encoded_work
    base = tmp_path_factory.mktemp("reference")
    path = write_experiment(base / "exp.yaml", document, copy_work(work, base / "work"), sized_train)
    experiment = load_experiment(path)
    result = train_stage(experiment, progress=False)
    assert result.step == sized_train["steps"] and result.exported is not None
    return experiment


class SubmittedTraining:
    """`pipeline train EXP --submit ... --wait` running as a subprocess, and the job it submitted."""

    def __init__(self, experiment_file: Path, *options: str):
        self.experiment = load_experiment(experiment_file)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "train",
                str(experiment_file),
                "--submit",
                "--wait",
                "--quiet",
                *options,
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        while self.process.stdout is not None:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"pipeline train --submit ended without a job:\n{''.join(self.lines)}")
            self.lines.append(line)
            found = re.match(r"submitted SLURM job (\d+)", line)
            if found:
                self.job_id = found.group(1)
                break

    def finish(self, timeout: float = JOB_TIMEOUT_S) -> str:
        """Wait for `--wait` to return; its whole output."""
        try:
            rest, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
            raise AssertionError(
                f"job {self.job_id} did not end in {timeout} s:\n{''.join(self.lines)}{rest}\n{self.logs()}"
            ) from None
        return "".join(self.lines) + rest

    def logs(self) -> str:
        folder = layout_of(self.experiment).train_submitit
        return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob(f"{self.job_id}_0_log.*")))

    def checkpoints(self) -> list[int]:
        return [step for step, _ in run_files(self.experiment).step_checkpoints()]


class Cluster:
    """The jobs of this module: requeued jobs start without SLURM's BeginTime delay (see the module
    docstring), and whatever is still queued at the end is cancelled."""

    def __init__(self) -> None:
        self.jobs: list[SubmittedTraining] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._release_requeued, daemon=True)
        self._thread.start()

    def submit(self, experiment_file: Path, *options: str) -> SubmittedTraining:
        job = SubmittedTraining(experiment_file, *options)
        self.jobs.append(job)
        return job

    def _release_requeued(self) -> None:
        while not self._stop.wait(1.0):
            for job in list(self.jobs):
                shown = subprocess.run(
                    ["scontrol", "show", "job", "--oneliner", job.job_id], capture_output=True, text=True, check=False
                ).stdout
                if "JobState=PENDING" in shown and "Reason=BeginTime" in shown:
                    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=False)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for job in self.jobs:
            subprocess.run(["scancel", job.job_id], check=False, capture_output=True)
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
                job.process.communicate(timeout=60)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_slurm()
    jobs = Cluster()
    yield jobs
    jobs.close()


@pytest.fixture(scope="module")
def timed_out_job(cluster, reference, encoded_work, sized_train, tmp_path_factory) -> SubmittedTraining:
    """The job with a 1-minute time limit, submitted once the reference is trained; the requeue test
    asks for it too, so that both jobs train side by side."""
    work, document = encoded_work
    base = tmp_path_factory.mktemp("timed_out")
    path = write_experiment(base / "exp.yaml", document, copy_work(work, base / "work"), sized_train)
    # SLURM signals at the first of its periodic time checks within 10 s (+ up to 60 s) of the limit
    # and kills at the first one past it: the loop has the time from the signal to the kill to save.
    # Each allocation trains for roughly half of it: --max-requeues leaves room for a slow machine.
    return cluster.submit(path, "--time", "1", "--signal-grace", "10", "--max-requeues", "30")


def exported_weights(experiment) -> dict[str, torch.Tensor]:
    return load_file(layout_of(experiment).exported_model)


def logged_losses(experiment) -> list[tuple[int, float]]:
    import json

    lines = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    return [(line["step"], line["loss"]) for line in lines if "loss" in line]


def assert_same_training(job: SubmittedTraining, reference) -> None:
    steps = reference.train.steps
    assert job.checkpoints()[-1] == steps
    ours, theirs = exported_weights(job.experiment), exported_weights(reference)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), f"exported {name} differs from the uninterrupted run's"
    assert logged_losses(job.experiment) == logged_losses(reference)


def restarts(job_id: str) -> int:
    found = re.search(r"Restarts=(\d+)", scontrol_job(job_id))
    assert found, scontrol_job(job_id)
    return int(found.group(1))


def test_a_job_requeued_from_outside_resumes_and_ends_like_an_uninterrupted_run(
    cluster, reference, timed_out_job, encoded_work, sized_train, tmp_path
):
    require_slurm()
    work, document = encoded_work
    path = write_experiment(tmp_path / "exp.yaml", document, copy_work(work, tmp_path / "work"), sized_train)
    job = cluster.submit(path, "--time", "10", "--cpus-per-task", "1", "--mem-mb", "3000")
    shown = scontrol_job(job.job_id)
    assert "TimeLimit=00:10:00" in shown and "MinMemoryNode=3000M" in shown and "Requeue=1" in shown
    assert "NumTasks=1" in shown and "CPUs/Task=1" in shown

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not job.checkpoints():
        assert job.process.poll() is None, f"the job ended before its first checkpoint:\n{job.finish()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    first = job.checkpoints()[0]
    requeued = subprocess.run(["scontrol", "requeue", job.job_id], capture_output=True, text=True, check=False)
    assert requeued.returncode == 0, requeued.stderr

    output = job.finish()
    assert job.process.returncode == 0, f"{output}\n{job.logs()}"
    steps = sized_train["steps"]
    assert f"finished at step {steps}/{steps}" in output
    assert restarts(job.job_id) >= 1
    logs = job.logs()
    stopped = re.search(r"stopped by SIGTERM at step (\d+)/", logs)
    assert stopped, logs
    assert int(stopped.group(1)) >= first  # saved on the requeue's SIGTERM, after the first checkpoint
    assert f"from step {stopped.group(1)} " in logs  # and the requeued job resumed from that save
    assert_same_training(job, reference)


def test_a_job_past_its_time_limit_saves_requeues_itself_and_completes(timed_out_job, reference, sized_train):
    require_slurm()
    output = timed_out_job.finish()
    logs = timed_out_job.logs()
    assert timed_out_job.process.returncode == 0, f"{output}\n{logs}"
    steps = sized_train["steps"]
    assert f"finished at step {steps}/{steps}" in output
    assert restarts(timed_out_job.job_id) >= 1
    # Stopped by SLURM's SIGUSR1 or, when that comes later, by the loop's own deadline (the job's end
    # time less the signal grace, pipeline/train/time_limit.py): either way saved, then requeued.
    assert re.search(r"stopped by (SIGUSR1|the job's time limit)", logs) and "requeued job" in logs, logs
    saved = [int(step) for step in re.findall(r"at step (\d+)/\d+, checkpoint saved; requeued job", logs)]
    resumed = [int(step) for step in re.findall(r"resuming run \w+ from step (\d+)", logs)]
    assert saved and resumed == saved, logs  # every allocation resumed where the one before it saved
    assert_same_training(timed_out_job, reference)


def test_wait_reports_a_job_that_failed_and_exits_non_zero(cluster, encoded_work, tmp_path):
    require_slurm()
    _, document = encoded_work
    path = write_experiment(tmp_path / "exp.yaml", document, tmp_path / "no-latents", TINY_TRAIN)
    job = cluster.submit(path, "--time", "5", "--signal-grace", "30")
    output = job.finish()
    assert job.process.returncode == 1, output
    assert f"job {job.job_id}: FAILED" in output
    assert "error: " in output and "index.h5: no latent index" in output  # the job's own error, from its result
    assert f"{job.job_id}_0_log.err" in output
