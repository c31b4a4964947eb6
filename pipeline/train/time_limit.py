"""When the SLURM job this process runs in must stop: its end time, less a margin to save and exit.

The training loop stops itself at that deadline (saves a checkpoint, exits 75, the next attempt or the
requeued job resumes), besides stopping on SIGUSR1/SIGTERM. A signal alone is not enough for a job of
one process: the workflow's SLURM executor runs it inside an `srun` step of its own Snakemake, and the
`--signal` that would reach the training reaches, and kills, that Snakemake first. Reading the end time
works wherever the job runs, signal or not.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping

END_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # squeue's %e, in the local time zone


def slurm_end_time(
    environ: Mapping[str, str] = os.environ, run: Callable[..., subprocess.CompletedProcess] = subprocess.run
) -> float | None:
    """The end time (seconds since the epoch) of the SLURM job this process runs in; None outside a
    job, for a job without a time limit, or when squeue cannot tell."""
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        shown = run(
            ["squeue", "--noheader", "--jobs", job_id, "--format=%e"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = shown.stdout.strip() if shown.returncode == 0 else ""
    try:
        return time.mktime(time.strptime(text, END_TIME_FORMAT))
    except ValueError:  # "N/A", "Unknown", nothing: no limit to watch
        return None


def job_deadline(margin_s: int, environ: Mapping[str, str] = os.environ) -> float | None:
    """When to stop: `margin_s` seconds before the job's end time (None: no deadline)."""
    end = slurm_end_time(environ) if margin_s > 0 else None
    return None if end is None else end - margin_s
