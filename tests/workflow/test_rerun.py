"""What Snakemake reruns after a change: exactly the stages whose hash, inputs or code changed, nothing upstream.

One tiny experiment (the demo cut down: 2 shards, 2 autoencoder steps, QUICK_TRAIN, QUICK_SAMPLE) runs
the whole default target once per module with the local profile; the tests then ask dry runs (`-n`)
which jobs they would run after a change, read from Snakemake's "Job stats" table and checked against
the `rule X:` blocks it prints, so a plan with one job too many or too few fails. Each stage's rules
carry `params: stage_hash` and the profile reruns on `[mtime, params, input, code]`.

The test that really reruns a stage (a forced pre-encode) is the last one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, deep_merge, write_quick_experiment

pytestmark = pytest.mark.slow

SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
SHARDS = 2  # 4 demo pieces of 24 s in all, at most 3 items per shard


@dataclass(frozen=True)
class Workflow:
    experiment: Path
    work: Path
    shards: int

    def snakemake(
        self, *arguments: str, overrides: tuple[str, ...] = (), experiment: Path | None = None, cwd: Path = REPO_ROOT
    ) -> str:
        """Run snakemake (targets and flags first: --config takes every word after it); stdout + stderr."""
        config = [f"experiment={experiment or self.experiment}"]
        if overrides:
            config.append(f"overrides={json.dumps(list(overrides))}")
        workflow = ["--snakefile", str(REPO_ROOT / "Snakefile"), "--profile", str(REPO_ROOT / "profiles" / "local")]
        result = subprocess.run(
            [SNAKEMAKE, *workflow, "--cores", "2", *arguments, "--config", *config],
            capture_output=True,
            text=True,
            cwd=cwd,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        return output

    def plan(self, *arguments: str, **options) -> Plan:
        return dry_run_plan(self.snakemake("--dry-run", *arguments, **options))


@dataclass(frozen=True)
class Plan:
    jobs: Counter  # rule -> number of jobs
    reasons: dict[str, list[str]]  # rule -> the `reason:` line of each of its jobs
    output: str

    def reason(self, rule: str) -> str:
        (reason,) = set(self.reasons[rule])
        return reason


NOTHING_TO_DO = "Nothing to be done (all requested files are present and up to date)."
TABLE_ROW = re.compile(r"^(\w+)\s+(\d+)$")
JOB_BLOCK = re.compile(r"^\s*(?:rule|localrule|checkpoint) (\w+):$")
REASON = re.compile(r"^\s*reason: (.*)$")
FINISHED = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", re.MULTILINE)


def job_stats(output: str) -> list[Counter]:
    """Every "Job stats" table in the output (a dry run prints the same one before and after the jobs)."""
    tables = []
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if line.strip() != "Job stats:":
            continue
        assert lines[start + 1].split() == ["job", "count"], lines[start : start + 3]
        assert set(lines[start + 2].replace(" ", "")) == {"-"}, lines[start : start + 3]
        table: Counter = Counter()
        for row in lines[start + 3 :]:
            match = TABLE_ROW.match(row.strip())
            assert match, f"unexpected line in the Job stats table: {row!r}"
            name, count = match[1], int(match[2])
            if name == "total":
                assert count == sum(table.values()), f"total {count} != the rows' sum {sum(table.values())}"
                break
            assert name not in table, f"{name} twice in the Job stats table"
            table[name] = count
        else:
            raise AssertionError("a Job stats table without its total line")
        tables.append(table)
    return tables


def dry_run_plan(output: str) -> Plan:
    """The jobs a dry run would run: its Job stats table, which must agree with the `rule X:` blocks."""
    tables = job_stats(output)
    blocks: Counter = Counter()
    reasons: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if match := JOB_BLOCK.match(line):
            current = match[1]
            blocks[current] += 1
        elif current is not None and (match := REASON.match(line)):
            reasons.setdefault(current, []).append(match[1].strip())
            current = None
    if not tables:
        assert NOTHING_TO_DO in output, "neither a Job stats table nor 'Nothing to be done':\n" + output[-3000:]
        assert not blocks, f"jobs printed without a Job stats table: {blocks}"
        return Plan(Counter(), {}, output)
    assert NOTHING_TO_DO not in output
    assert all(table == tables[0] for table in tables), tables
    assert blocks == tables[0], f"rule blocks {dict(blocks)} != Job stats {dict(tables[0])}"
    assert all(len(reasons.get(rule, [])) == count for rule, count in blocks.items()), reasons
    return Plan(tables[0], reasons, output)


def finished_jobs(output: str) -> Counter:
    """The jobs a real run ran (`Finished jobid: N (Rule: X)`)."""
    return Counter(FINISHED.findall(output))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Workflow:
    """The whole default target of a tiny experiment, run once for the module."""
    directory = tmp_path_factory.mktemp("rerun")
    experiment = write_quick_experiment(directory, "reruntest", 6, 24, data={"shard": {"max_items": 3}})
    run = Workflow(experiment, directory / "work", SHARDS)
    ran = finished_jobs(run.snakemake())
    plan = json.loads((run.work / "shards" / "plan.json").read_text(encoding="utf-8"))
    assert len(plan["shards"]) == SHARDS
    assert ran == Counter(
        plan=1,
        shard_one=SHARDS,
        shard_summary=1,
        train_autoencoder=1,
        pre_encode_one=SHARDS,
        index=1,
        train_model=1,
        sample_audio=1,
        report_autoencoder_training=1,
        report_latents=1,
        report_training=1,
        report_samples=1,
        all=1,
    )
    return run


@contextmanager
def edited(experiment: Path, changes: dict) -> Iterator[None]:
    """The experiment file with `changes` merged in (deeply), restored afterwards."""
    original = experiment.read_text(encoding="utf-8")
    document = deep_merge(yaml.safe_load(original), changes)
    experiment.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    try:
        yield
    finally:
        experiment.write_text(original, encoding="utf-8")


# What a change of the train stage reruns: the model, the samples made with it, their report parts.
TRAIN_AND_SAMPLE = Counter(train_model=1, sample_audio=1, report_training=1, report_samples=1, all=1)


def test_a_complete_run_plans_nothing(workflow):
    targets = ("all", "shard", "train_autoencoder", "pre_encode", "train", "sample", "report")
    assert workflow.plan(*targets).jobs == Counter()


def test_a_newer_input_with_the_same_bytes_reruns_nothing(workflow, tmp_path):
    # Snakemake compares the checksum it recorded for each input up to --max-checksum-file-size (1 MB
    # by default) before it reruns a job for a newer one; the index is such a small file here.
    index = workflow.work / "latents" / "index.h5"
    assert index.stat().st_size < 1_000_000
    before = index.stat()
    index.touch()
    try:
        assert workflow.plan().jobs == Counter()
        # The checksums are in <work_dir>/.snakemake, whichever directory Snakemake is started from.
        assert dry_run_plan(workflow.snakemake("--dry-run", cwd=tmp_path)).jobs == Counter()
    finally:
        os.utime(index, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_learning_rate_override_reruns_training_and_sampling_only(workflow):
    plan = workflow.plan(overrides=("train.optimizer.lr=0.002",))
    assert plan.jobs == TRAIN_AND_SAMPLE
    assert plan.reason("train_model").startswith("Params have changed since last execution")
    assert plan.reason("sample_audio").startswith("Input files updated by another job")


def test_a_learning_rate_edited_in_the_file_reruns_training_and_sampling_only(workflow):
    with edited(workflow.experiment, {"train": {"optimizer": {"lr": 0.002}}}):
        plan = workflow.plan("train", "sample")  # the stage targets: no report parts
    assert plan.jobs == Counter(train_model=1, sample_audio=1, train=1, sample=1)
    assert plan.reason("train_model").startswith("Params have changed since last execution")


def test_an_autoencoder_change_reruns_everything_after_the_shards(workflow):
    plan = workflow.plan(overrides=("autoencoder.training.kl_weight=0.001",))
    assert plan.jobs == Counter(
        train_autoencoder=1,
        pre_encode_one=workflow.shards,
        index=1,
        train_model=1,
        sample_audio=1,
        report_autoencoder_training=1,
        report_latents=1,
        report_training=1,
        report_samples=1,
        all=1,
    )
    assert plan.reason("train_autoencoder").startswith("Params have changed since last execution")
    assert plan.reason("report_latents").startswith("Input files updated by another job")


def test_a_data_change_reruns_everything_from_the_plan(workflow):
    plan = workflow.plan(overrides=("data.min_item_seconds=2.0",))
    # The per-shard jobs join the DAG once the plan checkpoint has run again (their count is the new plan's).
    assert plan.jobs == Counter(
        plan=1,
        shard_summary=1,
        train_autoencoder=1,
        index=1,
        train_model=1,
        sample_audio=1,
        report_autoencoder_training=1,
        report_latents=1,
        report_training=1,
        report_samples=1,
        all=1,
    )
    assert plan.reason("plan").startswith("Params have changed since last execution")
    assert "checkpoint jobs, which will result in alteration of the DAG" in plan.output


RUNTIME_ONLY = {  # a setting of every stage that is runtime-only, and resources (never in a hash)
    "train": {"log_every": 2, "keep_checkpoints": 3, "device": "cpu"},
    "pre_encode": {"num_workers": 0},
    "sample": {"batch_size": 2},
    "resources": {"train": {"mem_mb": 5000}, "pre_encode": {"cpus": 1}},
}


def test_runtime_only_settings_and_resources_rerun_nothing(workflow):
    overrides = ("train.log_every=2", "train.data.num_workers=1", "autoencoder.training.log_every=5")
    overrides += ("pre_encode.num_workers=0", "sample.batch_size=2", "resources.train.mem_mb=5000")
    assert workflow.plan(overrides=overrides).jobs == Counter()


def test_the_experiment_edited_at_another_path_with_runtime_only_changes_reruns_nothing(workflow, tmp_path):
    copy = tmp_path / "elsewhere.yaml"
    shutil.copyfile(workflow.experiment, copy)
    with edited(copy, RUNTIME_ONLY):
        assert workflow.plan(experiment=copy).jobs == Counter()


def test_the_records_that_trigger_reruns_go_with_the_experiment_not_the_directory_snakemake_runs_in(workflow, tmp_path):
    """Snakemake's working directory is the experiment's work_dir (common.smk), so its records of params
    and checksums are in <work_dir>/.snakemake: from any directory a changed stage hash reruns the stage
    (the installed profile lets users start snakemake anywhere), and nothing is recorded where it ran."""
    output = workflow.snakemake("--dry-run", overrides=("train.optimizer.lr=0.002",), cwd=tmp_path)
    assert dry_run_plan(output).jobs == TRAIN_AND_SAMPLE
    assert "have missing provenance/metadata" not in output
    assert (workflow.work / ".snakemake" / "metadata").is_dir()
    assert not (tmp_path / ".snakemake" / "metadata").exists()


def test_more_shards_per_job_reruns_the_stage_jobs_and_what_reads_the_index(workflow):
    """The jobs' shards change, so their params do; each finds its stores current (the forced run below)."""
    plan = workflow.plan(overrides=("resources.pre_encode.shards_per_job=2",))
    assert plan.jobs == TRAIN_AND_SAMPLE + Counter(pre_encode_one=1, index=1, report_latents=1)
    assert "Params have changed since last execution" in plan.reason("pre_encode_one")


def test_forced_pre_encode_reruns_its_jobs_keeps_the_current_stores_and_retrains_nothing(workflow):
    """Last in the module: it reruns the pre-encode jobs. Each skips its complete, current stores (a job
    is resumable); the index rebuilt from them is the same bytes, so nothing after it reruns."""
    latents = workflow.work / "latents"
    index = latents / "index.h5"
    stores = sorted(latents.glob("shard-*.h5"))
    stores_before = [store.stat().st_mtime_ns for store in stores]
    forced = ("pre_encode", "--forcerun", "pre_encode_one")
    assert workflow.plan(*forced).jobs == Counter(pre_encode_one=workflow.shards, index=1, pre_encode=1)

    bytes_before = file_digest(index)
    assert finished_jobs(workflow.snakemake(*forced)) == Counter(pre_encode_one=workflow.shards, index=1, pre_encode=1)
    assert [store.stat().st_mtime_ns for store in stores] == stores_before
    records = [json.loads(path.read_text()) for path in sorted((latents / "jobs").glob("job-*.json"))]
    assert len(records) == workflow.shards and all(r["skipped"] for record in records for r in record["results"])
    assert file_digest(index) == bytes_before
    assert workflow.plan().jobs == Counter()
