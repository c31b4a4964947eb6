"""The local SLURM test cluster (`.ci/slurm-setup.sh`): whether it answers, and the flags every run on it needs.

Tests that need the cluster call `require_slurm()`: without one they are skipped on a developer's
machine, but fail where `PIPELINE_REQUIRE_SLURM=1` is set (CI, `.ci/run`), so a cluster that does not
start is never mistaken for a passing suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# On top of profiles/slurm, for a cluster without accounting (sacct cannot see jobs): squeue status
# (valid while MinJobAge >= 3 x the first status check delay), no account, quick first status check.
SLURM_TEST_FLAGS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
)
REQUIRED_ENV = "PIPELINE_REQUIRE_SLURM"


def slurm_unavailable() -> str | None:
    """None when a cluster answers, else why a test cannot use it."""
    if shutil.which("sbatch") is None:
        return "no SLURM here: sbatch is not on PATH (start a test cluster with .ci/slurm-setup.sh)"
    try:
        sinfo = subprocess.run(["sinfo", "--noheader"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"SLURM does not answer: sinfo failed ({error})"
    if sinfo.returncode != 0:
        return f"SLURM does not answer: sinfo failed ({sinfo.stderr.strip()}); run .ci/slurm-setup.sh"
    return None


def require_slurm() -> None:
    """Skip the calling test without a cluster, or fail it when PIPELINE_REQUIRE_SLURM=1."""
    reason = slurm_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(f"{REQUIRED_ENV}=1 but {reason}")
    pytest.skip(reason)


def job_state(job_id: str) -> str:
    """The job's state as squeue reports it (finished jobs stay visible for MinJobAge), '' when unknown."""
    shown = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job_id],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return shown.stdout.strip()


def scontrol_job(job_id: str) -> str:
    """`scontrol show job` of one job (its TRES, restarts, state)."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], check=False, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, f"scontrol show job {job_id}: {shown.stderr}"
    return shown.stdout
