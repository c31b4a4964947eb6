"""`pipeline train EXP --submit`: the train stage as one SLURM job, submitted through submitit, that
saves and requeues itself before its time limit and resumes where it stopped. The only module of the
package that imports submitit.

The job runs `TrainJob` (pickled by submitit into `<work_dir>/train/submitit/`) on every task: one task
per GPU on each node (one task without GPUs); `distributed.detect()` reads rank and world from the
`SLURM_*` variables of submitit's `srun`. Each start re-loads and re-validates the experiment file and
calls `train_stage`, which resumes from the run's newest checkpoint (`train/checkpoints/<run hash>/`):
the pickle holds no training state, so any start of the job is a resume.

How a job stops and comes back:

- SLURM sends SIGUSR1 `signal_grace_s` seconds before the time limit (`--signal=USR1@S`; up to a minute
  earlier, SLURM checks time limits periodically). `scancel --signal=USR1 <job>` does the same at
  once, and submitit's own preemption signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)
  is passed on as SIGUSR1. The loop saves a checkpoint at the next step boundary and stops; rank 0 then
  runs `scontrol requeue <job>` (at most `max_requeues` times) and every task exits with status 75.
- SIGTERM means SLURM itself is ending the job (`scontrol requeue`, preemption, `scancel`, the time
  limit without a signal): the loop saves and stops the same way within SLURM's KillWait, and the job
  only exits; SLURM requeues it or not.
- A signal that arrives while the job is starting (before the loop runs) is kept: the loop stops
  after its first step (`StopSignals` entered inside the job's own).
- A complete run exports the model exactly as `pipeline train` does and returns a summary, which
  submitit writes as the job's result pickle. A job that stops early leaves with `SystemExit`, which
  submitit does not record as a result, so a result pickle only ever says "done" or "failed".

`wait_for` follows a job with `scontrol show job` (no accounting database needed: submitit's own
job states come from `sacct`) and the result pickle.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths

from pipeline.config.sections import processes_per_node
from pipeline.errors import UserFacingError
from pipeline.layout import layout_of
from pipeline.train.checkpoints import STOP_SIGNALS, StopSignals

DEFAULT_SIGNAL_GRACE_S = 120  # when resources.train.signal_seconds is 0: a submitted job always asks for the signal
DEFAULT_MAX_REQUEUES = 10
PEER_WAIT_S = 60.0  # how long ranks other than 0 wait for the requeue (its SIGTERM) before they exit
FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
)
TIME_FORMATS = "minutes (90), MM:SS, HH:MM:SS (1:30:00), D-HH, D-HH:MM or D-HH:MM:SS (2-00:00:00)"
_SLURM_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<first>\d+)(?::(?P<second>\d+))?(?::(?P<third>\d+))?")


def parse_time(text: str | int, option: str = "--time") -> int:
    """A SLURM time limit in whole minutes, read as sbatch reads `--time`: `M`, `M:S`, `H:M:S`, `D-H`,
    `D-H:M`, `D-H:M:S`; seconds round up to the next minute."""
    value = str(text).strip()
    match = _SLURM_TIME.fullmatch(value)
    if match is None:
        raise UserFacingError(f"{option} {value!r} is not a SLURM time limit; use {TIME_FORMATS}")
    days, first, second, third = match.group("days", "first", "second", "third")
    if days is None:
        if second is None:
            hours, minutes, seconds = 0, int(first), 0
        elif third is None:
            hours, minutes, seconds = 0, int(first), int(second)
        else:
            hours, minutes, seconds = int(first), int(second), int(third)
        bounded = [("seconds", seconds)] + ([("minutes", minutes)] if third is not None else [])
    else:
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        bounded = [("hours", hours), ("minutes", minutes), ("seconds", seconds)]
    for name, number in bounded:
        if number >= (24 if name == "hours" else 60):
            raise UserFacingError(f"{option} {value!r}: {number} {name} is out of range; use {TIME_FORMATS}")
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 60:
        raise UserFacingError(f"{option} {value!r} is shorter than SLURM's smallest time limit, 1 minute")
    return -(-total // 60)


@dataclass(frozen=True)
class SubmitOptions:
    """What the job asks SLURM for. `SubmitOptions.of` fills what the command line leaves out from the
    experiment's `resources.train`, the request the workflow's train rule makes too."""

    nodes: int = 1
    gpus_per_node: int = 0
    time_min: int = 60
    cpus_per_task: int = 1
    mem_mb: int = 4000
    partition: str | None = None
    account: str | None = None
    signal_grace_s: int = DEFAULT_SIGNAL_GRACE_S
    max_requeues: int = DEFAULT_MAX_REQUEUES

    @property
    def tasks_per_node(self) -> int:
        return processes_per_node(self.gpus_per_node)

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @classmethod
    def of(
        cls,
        experiment: Any,
        *,
        nodes: int | None = None,
        gpus_per_node: int | None = None,
        partition: str | None = None,
        time: str | int | None = None,
        account: str | None = None,
        cpus_per_task: int | None = None,
        mem_mb: int | None = None,
        signal_grace_s: int | None = None,
        max_requeues: int | None = None,
    ) -> SubmitOptions:
        """The options given (command-line values, each checked and named by its flag), the rest from
        `experiment.resources.train`."""
        wanted = experiment.resources.train
        given = {"--nodes": nodes, "--gpus-per-node": gpus_per_node, "--cpus-per-task": cpus_per_task}
        given |= {"--mem-mb": mem_mb, "--signal-grace": signal_grace_s, "--max-requeues": max_requeues}
        least = {"--gpus-per-node": 0, "--signal-grace": 1, "--max-requeues": 0}
        for option, value in given.items():
            if value is not None and value < least.get(option, 1):
                raise UserFacingError(f"{option} must be at least {least.get(option, 1)}, got {value}")
        if time is not None:
            time_min, time_from = parse_time(time), f"--time {time}"
        else:
            time_min, time_from = wanted.runtime, "resources.train.runtime"
        if signal_grace_s is not None:
            grace, grace_from = signal_grace_s, "--signal-grace"
        elif wanted.signal_seconds:
            grace, grace_from = wanted.signal_seconds, "resources.train.signal_seconds"
        else:
            grace, grace_from = DEFAULT_SIGNAL_GRACE_S, "the default"
        if grace >= time_min * 60:
            raise UserFacingError(
                f"the signal before the time limit ({grace} s, {grace_from}) must come after the job starts: "
                f"it is not shorter than the time limit ({time_min} min, {time_from}); pass a smaller "
                "--signal-grace or a longer --time"
            )
        return cls(
            nodes=wanted.nodes if nodes is None else nodes,
            gpus_per_node=wanted.gpus if gpus_per_node is None else gpus_per_node,
            time_min=time_min,
            cpus_per_task=wanted.cpus if cpus_per_task is None else cpus_per_task,
            mem_mb=wanted.mem_mb if mem_mb is None else mem_mb,
            partition=partition,
            account=account,
            signal_grace_s=grace,
            max_requeues=DEFAULT_MAX_REQUEUES if max_requeues is None else max_requeues,
        )

    def slurm_parameters(self, job_name: str) -> dict[str, Any]:
        """`SlurmExecutor.update_parameters` keywords. The signal is SIGUSR1 (the loop's), not submitit's
        default USR2, and the job is marked requeueable even where the cluster's JobRequeue is 0."""
        parameters: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time_min,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem": f"{self.mem_mb}M",
            "signal_delay_s": self.signal_grace_s,
            "additional_parameters": {"signal": f"USR1@{self.signal_grace_s}", "requeue": True},
        }
        if self.gpus_per_node:
            parameters["gpus_per_node"] = self.gpus_per_node
        if self.partition:
            parameters["partition"] = self.partition
        if self.account:
            parameters["account"] = self.account
        return parameters

    def resource_overrides(self) -> list[str]:
        """`resources.train` as the job got it, for the experiment the job loads (resources enter no
        hash; the loop's CPU threads follow `cpus`)."""
        values = {"nodes": self.nodes, "gpus": self.gpus_per_node, "cpus": self.cpus_per_task}
        values |= {"mem_mb": self.mem_mb, "runtime": self.time_min, "signal_seconds": self.signal_grace_s}
        return [f"resources.train.{name}={value}" for name, value in values.items()]

    def describe(self) -> str:
        gpus = f", {self.gpus_per_node} GPU(s) per node" if self.gpus_per_node else ""
        where = "".join(
            f", {name} {value}" for name, value in (("partition", self.partition), ("account", self.account)) if value
        )
        return (
            f"{self.nodes} node(s) x {self.tasks_per_node} task(s){gpus}, {self.cpus_per_task} CPU(s) per task, "
            f"{self.mem_mb} MB per node, {self.time_min} min{where}; SIGUSR1 {self.signal_grace_s} s before the "
            f"time limit, requeued up to {self.max_requeues} time(s)"
        )


class JobSignals(StopSignals):
    """The job's own StopSignals, active from its start to its end: it remembers every stop signal (the
    loop's StopSignals, entered inside it, takes over one that came during start-up) and passes
    submitit's preemption signal on as SIGUSR1."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self._preemption = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG, signal.SIGUSR2)
        self._previous_preemption: Any = None

    def __enter__(self) -> JobSignals:
        super().__enter__()
        if self._preemption not in STOP_SIGNALS:
            self._previous_preemption = signal.signal(self._preemption, self._pass_on)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous_preemption is not None:
            signal.signal(self._preemption, self._previous_preemption)
        super().__exit__(*exc)

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        super()._handle(number, frame)
        self.seen.append(signal.Signals(number).name)

    def _pass_on(self, number: int, frame: types.FrameType | None) -> None:
        signal.raise_signal(signal.SIGUSR1)


class TrainJob(submitit.helpers.Checkpointable):
    """What the SLURM job runs on each task: load and validate the experiment, train (resuming), and
    requeue the job when the loop stopped on the signal before the time limit."""

    def __init__(
        self,
        experiment_file: Path,
        overrides: Sequence[str],
        base_dir: Path,
        run_hash: str,
        max_steps: int | None = None,
        progress: bool = True,
        max_requeues: int = DEFAULT_MAX_REQUEUES,
    ) -> None:
        self.experiment_file = Path(experiment_file)
        self.overrides = list(overrides)
        self.base_dir = Path(base_dir)
        self.run_hash = run_hash
        self.max_steps = max_steps
        self.progress = progress
        self.max_requeues = max_requeues

    def __call__(self) -> dict[str, Any]:
        from pipeline.config import load_experiment
        from pipeline.train.stage import run_hash, train_stage

        with JobSignals() as signals:
            experiment = load_experiment(self.experiment_file, self.overrides, self.base_dir)
            if run_hash(experiment) != self.run_hash:
                raise UserFacingError(
                    f"{self.experiment_file} changed since the job was submitted: it now trains run "
                    f"{run_hash(experiment)}, the job was submitted for run {self.run_hash}; submit it again"
                )
            result = train_stage(experiment, progress=self.progress, max_steps=self.max_steps)
            if _rank() == 0:
                print(result.line("train"), flush=True)
            target = result.steps if self.max_steps is None else min(result.steps, self.max_steps)
            if result.step < target:
                self._stopped(result.stopped_by or "a signal", result.step, result.steps, signals)
        # Done: a signal from now on (the time limit's, while submitit writes the result) asks for nothing,
        # and SIGUSR1's default action would end the process and fail the job.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        return {
            "step": result.step,
            "steps": result.steps,
            "exported": str(result.exported) if result.exported else None,
            "eval_loss": result.eval_loss,
            "first_eval_loss": result.first_eval_loss,
            "resumed_from": result.resumed_from,
            "run": str(layout_of(experiment).train_run(self.run_hash).directory),
        }

    def _stopped(self, by: str, step: int, steps: int, signals: JobSignals) -> None:
        """After the loop saved and stopped early: requeue (on SIGUSR1) or leave it to SLURM (SIGTERM)."""
        from pipeline.train.loop import EXIT_REQUEUE

        if by == "SIGTERM" or "SIGTERM" in signals.seen:
            print(
                f"train: stopped by SIGTERM at step {step}/{steps}, checkpoint saved: SLURM is ending this job "
                "(requeue, preemption, cancel or time limit); a requeued job resumes from the checkpoint",
                flush=True,
            )
            raise SystemExit(EXIT_REQUEUE)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if restarts >= self.max_requeues:
            raise UserFacingError(
                f"stopped by {by} at step {step}/{steps}, checkpoint saved, and not requeued: the job has been "
                f"requeued {restarts} time(s), the most it may be (--max-requeues {self.max_requeues}); submit it "
                "again to continue from the checkpoint"
            )
        if _rank() == 0:
            job_id = os.environ["SLURM_JOB_ID"]
            requeued = subprocess.run(
                ["scontrol", "requeue", job_id], capture_output=True, text=True, check=False, timeout=60
            )
            if requeued.returncode != 0:
                print(f"train: scontrol requeue {job_id} failed: {requeued.stderr.strip()}", file=sys.stderr)
            else:
                print(
                    f"train: stopped by {by} at step {step}/{steps}, checkpoint saved; requeued job {job_id} "
                    f"(requeue {restarts + 1} of at most {self.max_requeues})",
                    flush=True,
                )
        else:  # the requeue SIGTERMs every task; leaving earlier could end the step before rank 0 requeued
            deadline = time.monotonic() + PEER_WAIT_S
            while "SIGTERM" not in signals.seen and time.monotonic() < deadline:
                time.sleep(0.1)
        raise SystemExit(EXIT_REQUEUE)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """submitit's checkpoint protocol (its handler of the preemption signal, before `__call__` takes the
        signals over): the same job again. The training state is in the run's checkpoints, not here."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _rank() -> int:
    return int(os.environ.get("SLURM_PROCID", "0"))


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    folder: Path
    run_dir: Path
    options: SubmitOptions

    @property
    def paths(self) -> JobPaths:
        return JobPaths(self.folder, job_id=self.job_id, task_id=0)

    def describe(self) -> str:
        paths = self.paths
        return "\n".join(
            [
                f"submitted SLURM job {self.job_id}: {self.options.describe()}",
                f"  run:    {self.run_dir} (metrics.jsonl, checkpoints)",
                f"  stdout: {paths.stdout}",
                f"  stderr: {paths.stderr}",
                f"  follow: squeue -j {self.job_id}; tail -f {paths.stderr}; scontrol show job {self.job_id}",
            ]
        )


def submit(
    experiment_file: Path,
    overrides: Sequence[str],
    options: SubmitOptions,
    max_steps: int | None = None,
    progress: bool = True,
) -> SubmittedJob:
    """Validate the experiment here (mistakes show before anything is queued) and submit its training."""
    from pipeline.config import load_experiment
    from pipeline.train.stage import run_files, run_hash

    base_dir = Path.cwd()
    experiment_file = Path(experiment_file).resolve()
    job_overrides = [*overrides, *options.resource_overrides()]
    experiment = load_experiment(experiment_file, job_overrides, base_dir)
    if experiment.train is None:
        raise UserFacingError(f"experiment '{experiment.name}' ({experiment_file}) has no train section")
    folder = layout_of(experiment).train_submitit
    folder.mkdir(parents=True, exist_ok=True)
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
    except RuntimeError as error:  # no srun on PATH
        raise UserFacingError(f"--submit needs SLURM here: {error}") from None
    executor.update_parameters(**options.slurm_parameters(f"train-{experiment.name}"))
    task = TrainJob(
        experiment_file, job_overrides, base_dir, run_hash(experiment), max_steps, progress, options.max_requeues
    )
    try:
        job = executor.submit(task)
    except (FailedJobError, FailedSubmissionError) as error:
        raise UserFacingError(f"sbatch refused the training job: {str(error).strip()}") from None
    return SubmittedJob(job.job_id, folder, run_files(experiment).directory, options)


@dataclass
class JobStatus:
    state: str  # JobState of `scontrol show job`, or "" once SLURM has forgotten the job
    reason: str = ""
    restarts: int = 0
    exit_code: str = ""

    def line(self, job_id: str) -> str:
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        restarts = f", restarts {self.restarts}" if self.restarts else ""
        return f"job {job_id}: {self.state or 'no longer known to SLURM'}{reason}{restarts}"


def job_status(job_id: str) -> JobStatus:
    """The job as `scontrol show job` reports it (finished jobs stay for MinJobAge); no accounting needed."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, check=False, timeout=60
    )
    if shown.returncode != 0:
        if "Invalid job id" in shown.stderr:
            return JobStatus("")
        raise UserFacingError(f"scontrol show job {job_id} failed: {shown.stderr.strip()}")
    fields = dict(re.findall(r"(\w+)=(\S*)", shown.stdout))
    restarts = fields.get("Restarts", "0")
    return JobStatus(
        state=fields.get("JobState", ""),
        reason=fields.get("Reason", ""),
        restarts=int(restarts) if restarts.isdigit() else 0,
        exit_code=fields.get("ExitCode", ""),
    )


@dataclass
class JobOutcome:
    status: JobStatus
    result: dict[str, Any] | None = None  # the summary a complete run returned
    error: str | None = None  # the traceback a failed run left in its result pickle

    @property
    def succeeded(self) -> bool:
        return self.result is not None and self.status.state in ("COMPLETED", "")


def read_result(job: SubmittedJob, wait_s: float = 0.0) -> tuple[str, Any] | None:
    """submitit's result pickle of task 0: ("success", summary) or ("error", traceback); None when absent."""
    path = job.paths.result_pickle
    deadline = time.monotonic() + wait_s
    while not path.is_file() and time.monotonic() < deadline:  # a shared file system may show it late
        time.sleep(0.5)
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        return pickle.load(handle)


def wait_for(job: SubmittedJob, echo: Callable[[str], None] = print, poll_s: float = 5.0) -> JobOutcome:
    """Block until the job has ended (requeues are not an end), echoing each change of its state. An end
    other than COMPLETED counts once a second look agrees: a preempted job may still be requeued."""
    last, ending = None, False
    while True:
        status = job_status(job.job_id)
        shown = (status.state, status.reason, status.restarts)
        if shown != last:
            echo(status.line(job.job_id))
            last = shown
        if status.state in ("COMPLETED", "") or (status.state in FINISHED_STATES and ending):
            break
        ending = status.state in FINISHED_STATES
        time.sleep(poll_s)
    found = read_result(job, wait_s=30.0 if status.state == "COMPLETED" else 0.0)
    outcome = JobOutcome(status)
    if found is not None and found[0] == "success":
        outcome.result = found[1]
    elif found is not None:
        outcome.error = str(found[1])
    return outcome


def report(job: SubmittedJob, outcome: JobOutcome) -> list[str]:
    """What `--wait` prints once the job has ended."""
    paths = job.paths
    if outcome.succeeded:
        result = outcome.result or {}
        done = f"exported {result['exported']}" if result.get("exported") else "not exported (stopped at --max-steps)"
        return [f"train: job {job.job_id} finished at step {result.get('step')}/{result.get('steps')}; {done}"]
    lines = [
        f"train: job {job.job_id} ended {outcome.status.state or 'unseen'} (exit code {outcome.status.exit_code or '?'})"
    ]
    if outcome.error:
        last = [line for line in outcome.error.strip().splitlines() if line.strip()][-1:]
        lines += [f"  error: {line}" for line in last]
    lines += [f"  logs: {paths.stdout}", f"        {paths.stderr}"]
    return lines
