"""The SLURM job's end time, read the way the training loop reads it to stop before the time limit.

The loop's stop at that deadline runs for real in tests/workflow/test_slurm.py (a one-process training
job with a 1-minute limit, resumed by the next attempt)."""

from __future__ import annotations

import re
import subprocess
import time

from pipeline.train.time_limit import job_deadline, slurm_end_time
from tests.slurm import require_slurm, scontrol_job


def test_outside_a_job_there_is_no_deadline():
    assert slurm_end_time({}) is None
    assert job_deadline(300, {}) is None
    assert job_deadline(0, {"SLURM_JOB_ID": "1"}) is None  # margin 0: the loop stops on signals only


def test_the_end_time_of_a_running_job_is_the_one_slurm_shows():
    require_slurm()
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--time=5", "--job-name=time-limit-test", "-o", "/dev/null", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 120
        while "JobState=RUNNING" not in (shown := scontrol_job(job_id)):
            assert time.monotonic() < deadline, shown
            time.sleep(0.5)
        end = time.mktime(time.strptime(re.search(r"EndTime=(\S+)", shown).group(1), "%Y-%m-%dT%H:%M:%S"))
        assert slurm_end_time({"SLURM_JOB_ID": job_id}) == end
        assert job_deadline(60, {"SLURM_JOB_ID": job_id}) == end - 60
        assert 0 < end - time.time() <= 5 * 60
    finally:
        subprocess.run(["scancel", job_id], check=False)
    assert slurm_end_time({"SLURM_JOB_ID": "999999999"}) is None  # squeue knows no such job
