"""What one Snakemake job of a stage asks for: the experiment's `resources.<stage>` as Snakemake resources,
which the SLURM executor turns into sbatch options (docs/slurm.md has the table).

Memory and runtime grow with the attempt (`retries:` in the profile): a job killed for memory or time
is resubmitted asking for twice, three times as much. A training job resumes from its checkpoints, so a
second attempt continues where the first stopped.

Training with more than one process (GPUs per node x nodes) is one SLURM job whose processes `pipeline
train --launch` starts with `srun` itself (one task per GPU), so the job is submitted like an MPI job:
`mpi` and the task counts tell the executor to request the tasks and not wrap the command in its own
single-task `srun`; GPUs are requested per node (`--gpus-per-node`), so every node gets the same number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.config.sections import StageResources

TRAINING_STAGES = ("train_autoencoder", "train")  # stages whose jobs start one process per GPU


def scaled(base: int) -> Callable[..., int]:
    """A Snakemake resource callable: `base` on the first attempt, `attempt x base` on later ones."""

    def by_attempt(wildcards: Any, attempt: int) -> int:
        return base * attempt

    return by_attempt


def job_resources(stage: str, wanted: StageResources) -> dict[str, Any]:
    """Snakemake `resources:` of one job of `stage` (the keys the SLURM executor plugin reads)."""
    resources: dict[str, Any] = {
        "mem_mb": scaled(wanted.mem_mb),
        "runtime": scaled(wanted.runtime),
        "cpus_per_task": wanted.cpus,
        "nodes": wanted.nodes,
    }
    extra = []
    if stage in TRAINING_STAGES and wanted.processes > 1:
        resources["mpi"] = "srun"  # the command starts its own tasks
        if wanted.processes_per_node > 1:
            resources["tasks_per_node"] = wanted.processes_per_node
        else:
            resources["tasks"] = wanted.processes
        if wanted.gpus:
            extra.append(f"--gpus-per-node={wanted.gpus}")
    elif wanted.gpus:
        resources["gpu"] = wanted.gpus
    if wanted.signal_seconds:
        # Without `B:` SLURM signals the job's steps (the training processes), not the batch shell.
        extra.append(f"--signal=USR1@{wanted.signal_seconds}")
    if extra:
        resources["slurm_extra"] = " ".join(extra)
    return resources
