"""The workflow on a real SLURM cluster: profiles/slurm runs every stage as sbatch jobs, the per-shard
stages K shards per job. The run is resumed: the `shard` target first, then the default target on the
plan and shards it left (a Snakemake run that starts after plan.json exists, like every rerun).

Needs a running cluster (`.ci/slurm-setup.sh` starts a single-node one with two fake GPUs); skipped
when `sbatch` is not on PATH or `sinfo` fails. The test cluster has no accounting database, so the
run polls job states with squeue (the flags in SLURM_TEST_FLAGS, described in docs/slurm.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from pipeline.config import load_experiment
from tests.conftest import REPO_ROOT, write_quick_experiment
from tests.slurm import SLURM_TEST_FLAGS, require_slurm, scontrol_job

SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _experiment(directory: Path) -> Path:
    return write_quick_experiment(
        directory,
        "slurmtest",
        3,
        24,  # 4 pieces -> 4 shards of 1 item
        data={"shard": {"max_items": 1}},
        # Long enough to be requeued after its first checkpoint (TRAIN_STEPS steps, a checkpoint every 2).
        train={"steps": TRAIN_STEPS, "eval_every": 10, "log_every": 5},
        # One CPU per process so two jobs (or two ranks) fit side by side on the 2-core node; GPU stages
        # ask SLURM for GPUs (the test cluster's are placeholders: torch still runs on the CPU).
        resources={
            "shard": {"shards_per_job": SHARD_JOBS_OF},  # jobs of shards 0-2 and 3
            "train_autoencoder": {"cpus": 1},
            "pre_encode": {"cpus": 1, "gpus": 1, "shards_per_job": 2},  # jobs of shards 0-1 and 2-3
            "train": {"cpus": 1, "gpus": 2, "signal_seconds": 0},  # two processes (one per GPU): DDP over gloo
            "sample": {"cpus": 1, "gpus": 1},
        },
    )


TRAIN_STEPS = 20
SHARDS = 4
SHARD_JOBS_OF = 3


def _snakemake(*arguments: str, experiment: Path, slurm_logs: Path) -> list[str]:
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    return [
        snakemake,
        "--profile",
        "profiles/slurm",
        "--config",
        f"experiment={experiment}",
        *SLURM_TEST_FLAGS,
        "--slurm-logdir",
        str(slurm_logs),
        "--slurm-keep-successful-logs",
        *arguments,
    ]


def _running_train_job() -> str | None:
    listed = subprocess.run(
        ["squeue", "--noheader", "--states=RUNNING", "--format=%i|%k"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    for line in listed.stdout.split():
        job_id, _, comment = line.partition("|")
        if comment == "rule_train_model":
            return job_id
    return None


def _requeue_training_after_first_checkpoint(process: subprocess.Popen, work: Path) -> str | None:
    """While the workflow runs: once the training job has written a checkpoint, `scontrol requeue` it.
    Returns the SLURM id of the requeued job (None if the workflow ended first)."""
    deadline = time.monotonic() + 900
    while process.poll() is None and time.monotonic() < deadline:
        job_id = _running_train_job()
        if job_id is not None and list((work / "train" / "checkpoints").glob("*/step-*.pt")):
            requeued = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=30)
            assert requeued.returncode == 0, requeued.stderr
            return job_id
        time.sleep(0.5)
    return None


def _run_to_the_end(command: list[str], work: Path, requeue_training: bool) -> tuple[str, str | None]:
    """Run the workflow, `scontrol requeue` the training job once it has a checkpoint if asked; returns
    Snakemake's output and the requeued SLURM job id (None when none was)."""
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        output_lines: list[str] = []
        reader = threading.Thread(target=lambda: output_lines.extend(process.stdout), daemon=True)
        reader.start()
        requeued = _requeue_training_after_first_checkpoint(process, work) if requeue_training else None
        process.wait(timeout=1200)
        reader.join(timeout=30)
    output = "".join(output_lines)
    assert process.returncode == 0, output[-6000:]
    return output, requeued


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> dict:
    """Through profiles/slurm: the `shard` target, then the default target (resumed after sharding), with
    the training job requeued once mid-run."""
    require_slurm()
    directory = tmp_path_factory.mktemp("slurm")
    experiment = _experiment(directory)
    slurm_logs = directory / "slurm_logs"
    first, _ = _run_to_the_end(
        _snakemake("shard", experiment=experiment, slurm_logs=slurm_logs), directory / "work", False
    )
    output, requeued = _run_to_the_end(
        _snakemake(experiment=experiment, slurm_logs=slurm_logs), directory / "work", True
    )
    return {
        "directory": directory,
        "experiment": experiment,
        "work": directory / "work",
        "slurm_logs": slurm_logs,
        "first_output": first,
        "output": output,
        "requeued": requeued,
    }


def _submitted(run: dict, output: str) -> dict[str, str]:
    """SLURM job id -> `rule_<rule>` (the top folder of its log path: <logdir>/rule_<rule>/[...]/<id>.log)."""
    submitted = {}
    for _, slurm_id, log in SUBMITTED.findall(output):
        log_path = Path(log)
        assert log_path.is_file() and log_path.stem == slurm_id, log
        top = log_path.relative_to(run["slurm_logs"]).parts[0]
        assert top.startswith("rule_"), log
        submitted[slurm_id] = top
    return submitted


def test_every_stage_runs_down_to_sampled_wavs_and_the_stores_verify(slurm_run):
    work = slurm_run["work"]
    names = [shard["name"] for shard in json.loads((work / "shards" / "plan.json").read_text())["shards"]]
    assert len(names) == SHARDS
    for name in names:
        assert (work / "shards" / f"{name}.tar").is_file(), name
        assert (work / "shards" / f"{name}.json").is_file(), name
        assert (work / "latents" / f"{name}.h5").is_file(), name
    assert sorted(p.stem for p in (work / "latents").glob("shard-*.h5")) == sorted(names)
    assert (work / "autoencoder" / "model.safetensors").is_file()
    assert "step 2/2" in (work / "logs" / "train_autoencoder.log").read_text()
    assert (work / "train" / "model.safetensors").is_file()
    assert (work / "samples" / "samples.json").is_file() and (work / "samples" / "sample-0000.wav").is_file()

    # `pipeline verify` passes on every store and on the index, against the experiment.
    for store in [*sorted((work / "latents").glob("shard-*.h5")), work / "latents" / "index.h5"]:
        verified = subprocess.run(
            [sys.executable, "-m", "pipeline", "verify", str(store), "--experiment", str(slurm_run["experiment"])],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert verified.returncode == 0, (store, verified.stdout, verified.stderr)


def test_the_resumed_run_does_each_shard_once_k_shards_per_job(slurm_run):
    work = slurm_run["work"]
    # The `shard` run: the plan, two shard jobs (shards 0-2 and 3), the summary.
    assert sorted(_submitted(slurm_run, slurm_run["first_output"]).values()) == [
        "rule_plan",
        "rule_shard_one",
        "rule_shard_one",
        "rule_shard_summary",
    ], slurm_run["first_output"][-6000:]
    records = [json.loads((work / "shards" / "jobs" / f"job-{job:06d}.json").read_text()) for job in (0, 1)]
    assert [record["shards"] for record in records] == [[0, 1, 2], [3]]
    assert all(not result["skipped"] for record in records for result in record["results"])
    # The resumed run planned no shard work: every tar was written once, by the first run.
    assert not re.search(r"^\s*rule (plan|shard_one|shard_summary):", slurm_run["output"], re.MULTILINE)
    pre_encoded = [json.loads((work / "latents" / "jobs" / f"job-{job:06d}.json").read_text()) for job in (0, 1)]
    assert [record["shards"] for record in pre_encoded] == [[0, 1], [2, 3]]
    assert all(not result["skipped"] for record in pre_encoded for result in record["results"])


def test_jobs_are_sbatch_jobs_with_their_gpus(slurm_run):
    submitted = _submitted(slurm_run, slurm_run["output"])
    # One SLURM job per job of a rule: the pre-encode jobs hold two shards each.
    assert sorted(submitted.values()) == [
        "rule_index",
        "rule_pre_encode_one",
        "rule_pre_encode_one",
        "rule_sample_audio",
        "rule_train_autoencoder",
        "rule_train_model",
    ], slurm_run["output"][-6000:]
    local = set(re.findall(r"^localrule (\w+):", slurm_run["output"], re.MULTILINE))
    assert local == {"all"} | {rule for rule in local if rule.startswith("report_")}  # only the report pages

    states = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(submitted)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert states.returncode == 0, states.stderr
    # squeue forgets a job MinJobAge after it ended: on a loaded machine the first ones may be gone.
    seen = dict(line.split("|") for line in states.stdout.split())
    assert set(seen) <= set(submitted) and set(seen.values()) == {"COMPLETED"}, seen
    gpu_jobs = {"rule_pre_encode_one", "rule_sample_audio", "rule_train_model"}
    assert {name for slurm_id, name in submitted.items() if slurm_id in seen} >= gpu_jobs, seen

    # GPUs as the experiment asks: one per pre-encode job (its shards run one after another) and
    # for sampling, two on the node for training (one task per GPU), none for the CPU stages.
    for slurm_id, name in submitted.items():
        if slurm_id not in seen:
            continue
        shown = scontrol_job(slurm_id)
        per_job = re.search(r"TresPerJob=\S*gpu:(\d+)", shown)  # gres:gpu:1 / gres/gpu:1
        per_node = re.search(r"TresPerNode=\S*gpu:(\d+)", shown)
        gpus = (per_job and per_job.group(1), per_node and per_node.group(1))
        expected = {
            "rule_pre_encode_one": ("1", None),
            "rule_sample_audio": ("1", None),
            "rule_train_model": (None, "2"),
        }
        assert gpus == expected.get(name, (None, None)), (name, slurm_id, shown)
        if name == "rule_train_model":
            assert re.search(r"NumTasks=2\b", shown), shown
        if name == "rule_pre_encode_one":  # two shards: twice the experiment's runtime per shard
            minutes = 2 * load_experiment(slurm_run["experiment"]).resources.pre_encode.runtime
            assert re.search(rf"TimeLimit={minutes // 60:02d}:{minutes % 60:02d}:00\b", shown), shown


def test_the_requeued_training_resumes_to_the_weights_of_an_uninterrupted_run(slurm_run):
    from safetensors.torch import load_file

    work = slurm_run["work"]
    assert slurm_run["requeued"] is not None, "the training job ended before it could be requeued"
    assert re.search(r"Restarts=1\b", scontrol_job(slurm_run["requeued"]))
    train_log = (work / "logs" / "train.log").read_text()
    assert "starting 2 processes" in train_log and "srun" in train_log
    (run_dir,) = (work / "train" / "checkpoints").iterdir()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == TRAIN_STEPS
    requeued_weights = load_file(work / "train" / "model.safetensors")

    # After a complete run there is nothing left to do.
    planned = subprocess.run(
        _snakemake("-n", experiment=slurm_run["experiment"], slurm_logs=slurm_run["slurm_logs"]),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert planned.returncode == 0 and "Nothing to be done" in planned.stdout + planned.stderr, planned.stdout

    # The same training uninterrupted, with two processes off SLURM (torchrun), from an empty run dir.
    shutil.rmtree(run_dir)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    uninterrupted = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", str(slurm_run["experiment"]), "--launch", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stdout[-3000:] + uninterrupted.stderr[-3000:]
    assert "torch.distributed.run" in uninterrupted.stderr
    reference = load_file(work / "train" / "model.safetensors")
    assert reference.keys() == requeued_weights.keys()
    assert all(torch.equal(reference[name], requeued_weights[name]) for name in reference)


# A 1-minute limit and signal_seconds 50: the first attempt must stop ~10 s after it starts, the second
# (2 minutes) ~70 s, the third (3 minutes) ~130 s. Training sized to take ~40 s by a measurement on this
# shared machine is stopped at least once and done by the third attempt even when the measurement is
# off by a factor of 4 either way.
TIME_LIMITED_SECONDS = 40
SIGNAL_SECONDS = 50
MEASURE_STEPS = 60


def test_a_training_job_past_its_time_limit_saves_and_its_retry_resumes_to_the_uninterrupted_weights(slurm_run):
    """One training process, a 1-minute limit, signal_seconds 50: the loop reads the job's end time,
    saves and exits 75 50 s before it, Snakemake submits the next attempt (retries, twice the time),
    which resumes from the checkpoint. (A one-process job gets no --signal: in the executor's srun step
    SIGUSR1 would kill the Snakemake running the training first.) The reference, trained straight through
    in this process from a copy of the stores, runs while the SLURM job does (one CPU each)."""
    from safetensors.torch import load_file

    from pipeline.train.stage import run_files, train_stage

    work, experiment = slurm_run["work"], slurm_run["experiment"]
    base = slurm_run["directory"] / "time_limit"
    reference_work = base / "work"
    shutil.copytree(work, reference_work, symlinks=True, ignore=shutil.ignore_patterns("train", "samples"))
    # A new run (its own run hash: train.steps alone would continue the module's run), one process.
    one_process = ["train.optimizer.lr=0.0011", "resources.train.gpus=0", "resources.train.cpus=1"]

    def reference_experiment(steps: int) -> object:
        overrides = [f"paths.work_dir={reference_work}", f"train.steps={steps}", *one_process]
        overrides.append("resources.train.signal_seconds=0")
        overrides += [f"train.checkpoint_every={max(steps // 4, 1)}", f"train.eval_every={steps}"]
        return load_experiment(experiment, overrides)

    started = time.monotonic()
    train_stage(reference_experiment(MEASURE_STEPS), progress=False)
    rate = MEASURE_STEPS / (time.monotonic() - started)
    steps = max(200, int(rate * TIME_LIMITED_SECONDS) // 100 * 100)

    limited = [f"train.steps={steps}", f"train.checkpoint_every={steps // 4}", f"train.eval_every={steps}"]
    limited += [*one_process, "resources.train.runtime=1", f"resources.train.signal_seconds={SIGNAL_SECONDS}"]
    command = _snakemake("train", experiment=experiment, slurm_logs=slurm_run["slurm_logs"])
    after_experiment = command.index(f"experiment={experiment}") + 1
    command.insert(after_experiment, f"overrides={json.dumps(limited)}")
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as job:
        output_lines: list[str] = []
        reader = threading.Thread(target=lambda: output_lines.extend(job.stdout), daemon=True)
        reader.start()
        reference = reference_experiment(steps)
        shutil.rmtree(reference_work / "train", ignore_errors=True)
        assert train_stage(reference, progress=False).step == steps
        job.wait(timeout=1200)
        reader.join(timeout=30)
    output = "".join(output_lines)
    assert job.returncode == 0, output[-6000:]

    attempts = [slurm_id for _, slurm_id, log in SUBMITTED.findall(output) if "rule_train_model" in log]
    assert len(attempts) >= 2, output[-6000:]  # stopped by the limit at least once, then resubmitted
    first = scontrol_job(attempts[0])
    assert re.search(r"TimeLimit=00:01:00", first) and re.search(r"NumTasks=1\b", first), first
    first_log = next(Path(log) for _, slurm_id, log in SUBMITTED.findall(output) if slurm_id == attempts[0])
    assert "exit status 75" in first_log.read_text()  # saved and stopped before the limit, not killed
    last_log = (work / "logs" / "train.log").read_text()
    assert "resuming run" in last_log and f"stopping {SIGNAL_SECONDS} s before the job's time limit" in last_log
    run = run_files(load_experiment(experiment, limited))
    assert json.loads(run.metrics.read_text().splitlines()[-1])["step"] == steps
    limited_weights = load_file(work / "train" / "model.safetensors")
    reference_weights = load_file(reference_work / "train" / "model.safetensors")
    assert limited_weights.keys() == reference_weights.keys()
    assert all(torch.equal(limited_weights[name], reference_weights[name]) for name in limited_weights)
