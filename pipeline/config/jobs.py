"""What one Snakemake job of a stage asks for: the experiment's `resources.<stage>` as Snakemake resources,
which the SLURM executor turns into sbatch options (docs/slurm.md has the table).

Memory and runtime grow with the attempt (`retries:` in the profile): a job killed for memory or time
is resubmitted asking for twice, three times as much. A training job resumes from its checkpoints, so a
second attempt continues where the first stopped.

Training with more than one process (GPUs per node x nodes) is one SLURM job whose processes `pipeline
train --launch` starts with `srun` itself (one task per GPU), so the job is submitted like an MPI job:
`mpi` and the task counts tell the executor to request the tasks and not wrap the command in its own
single-task `srun` step; GPUs are requested per node (`--gpus-per-node`), so every node gets the same
number. Such a job gets `--signal=USR1@signal_seconds`: SLURM signals the processes of its steps, the
ranks, before the time limit. A one-process training job runs inside the executor's own step, under a
Snakemake that SIGUSR1 would kill first, so it gets no `--signal` (the plugin refuses an MPI job of one
task): the training loop reads the job's end time and stops `signal_seconds` before it by itself
(pipeline/train/time_limit.py), which it does in every job.

Per-shard stages (shard, pre_encode) run several shards per job, one after another
(`resources.<stage>.shards_per_job`): job j of a stage holds the shards j*K .. j*K + K - 1 of the
plan. This module is the one place that knows which shards a job holds; the Snakemake rules and
`pipeline shard/pre-encode --job J` both ask it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pipeline.config.sections import PerShardStageResources, StageResources

TRAINING_STAGES = ("train_autoencoder", "train")  # stages whose jobs start one process per GPU


def scaled(base: int) -> Callable[..., int]:
    """A Snakemake resource callable: `base` on the first attempt, `attempt x base` on later ones."""

    def by_attempt(wildcards: Any, attempt: int) -> int:
        return base * attempt

    return by_attempt


def scaled_per_shard(base: int, shards_of_job: Callable[[Any], int]) -> Callable[..., int]:
    """`scaled` for a job of several shards: `attempt x shards x base`."""

    def by_attempt(wildcards: Any, attempt: int) -> int:
        return base * shards_of_job(wildcards) * attempt

    return by_attempt


def shards_per_job(wanted: PerShardStageResources, shard_count: int) -> int:
    """K, the shards one job of a per-shard stage holds, for a plan of `shard_count` shards."""
    if wanted.shards_per_job != "auto":
        return int(wanted.shards_per_job)
    return max(1, math.ceil(shard_count / wanted.max_jobs))


def job_count(wanted: PerShardStageResources, shard_count: int) -> int:
    return math.ceil(shard_count / shards_per_job(wanted, shard_count))


def job_shards(wanted: PerShardStageResources, shard_count: int, job: int) -> range:
    """Plan positions of the shards job `job` holds (the last job may hold fewer)."""
    per_job = shards_per_job(wanted, shard_count)
    if not 0 <= job < job_count(wanted, shard_count):
        raise ValueError(f"job {job} is not one of the {job_count(wanted, shard_count)} jobs of {shard_count} shards")
    return range(job * per_job, min((job + 1) * per_job, shard_count))


def job_resources(
    stage: str, wanted: StageResources, shards_of_job: Callable[[Any], int] | None = None
) -> dict[str, Any]:
    """Snakemake `resources:` of one job of `stage` (the keys the SLURM executor plugin reads).

    `shards_of_job(wildcards)`: for a per-shard stage, how many shards the job holds; its runtime
    is that many times `runtime` (minutes per shard)."""
    resources: dict[str, Any] = {
        "mem_mb": scaled(wanted.mem_mb),
        "runtime": scaled(wanted.runtime) if shards_of_job is None else scaled_per_shard(wanted.runtime, shards_of_job),
        "cpus_per_task": wanted.cpus,
        "nodes": wanted.nodes,
    }
    extra = []
    one_training_process = stage in TRAINING_STAGES and wanted.processes == 1
    signal = 0 if one_training_process else wanted.signal_seconds  # one process: the loop watches the time itself
    if stage in TRAINING_STAGES and not one_training_process:
        resources["mpi"] = "srun"  # the command starts its own tasks
        if wanted.processes_per_node > 1:
            resources["tasks_per_node"] = wanted.processes_per_node
        else:
            resources["tasks"] = wanted.processes
        if wanted.gpus:
            extra.append(f"--gpus-per-node={wanted.gpus}")
    elif wanted.gpus:
        resources["gpu"] = wanted.gpus
    if signal:
        # Without `B:` SLURM signals the job's steps (the training processes), not the batch shell.
        extra.append(f"--signal=USR1@{signal}")
    if extra:
        resources["slurm_extra"] = " ".join(extra)
    return resources
