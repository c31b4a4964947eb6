"""Jobs of the per-shard stages (shard, pre_encode): one job runs K shards one after another.

`pipeline shard EXP --job J` and `pipeline pre-encode EXP --job J` (what the Snakemake rules run) take
job J's shards from `pipeline.config.jobs.job_shards`, skip each shard that is already complete and
current, do the others, and write the job's record last (`Layout.job_record`, written atomically).
The record is the job's declared Snakemake output, so a job killed half-way has none and its rerun
resumes at the first shard it had not finished; the shard tars and stores themselves are written
atomically by their stages, one at a time.

No torch here: the stages' functions are passed in by their callers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.jobs import job_count, job_shards, shards_per_job
from pipeline.errors import UserFacingError
from pipeline.layout import layout_of
from pipeline.shards.records import Plan
from pipeline.utils.atomic import write_json_atomic

JOB_RECORD_FORMAT = "pipeline-job-record"
JOB_RECORD_VERSION = 1


def shards_of_job(experiment: Experiment, stage: str, job: int, shard_count: int) -> range:
    """The plan indices job `job` of `stage` holds; a job the plan does not have is a user error."""
    wanted = getattr(experiment.resources, stage)
    try:
        return job_shards(wanted, shard_count, job)
    except ValueError:
        per_job = shards_per_job(wanted, shard_count)
        raise UserFacingError(
            f"{stage} job {job} is not in the plan: {shard_count} shard(s) at {per_job} per job "
            f"(resources.{stage}.shards_per_job) make {job_count(wanted, shard_count)} job(s)"
        ) from None


def run_job(
    experiment: Experiment, stage: str, job: int, run_shards: Callable[[Plan, Sequence[int]], Sequence[Any]]
) -> tuple[Path, list[Any]]:
    """Run `run_shards` (the stage's work on the plan and a list of its indices, returning one dataclass
    result per shard) on job `job`'s shards, then write the job record. Returns the record's path and
    the results."""
    from pipeline.shards.plan import load_plan

    plan = load_plan(experiment)  # once per job: a 10,000-shard plan takes a while to read
    shards = list(shards_of_job(experiment, stage, job, len(plan.shards)))
    record = layout_of(experiment).job_record(stage, job)
    record.unlink(missing_ok=True)  # the old record must not vouch for shards being rewritten
    results = list(run_shards(plan, shards))
    write_json_atomic(
        record,
        {
            "format": JOB_RECORD_FORMAT,
            "version": JOB_RECORD_VERSION,
            "stage": stage,
            "job": job,
            "shards": shards,
            "stage_hash": stage_hash(experiment, stage),
            "package_version": __version__,
            "results": [dataclasses.asdict(result) for result in results],
        },
    )
    return record, results
