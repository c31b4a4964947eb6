"""The workflow on a real SLURM cluster: profiles/slurm runs every stage as sbatch jobs, one per shard.

Needs a running cluster (`.ci/slurm-setup.sh` starts a single-node one with two fake GPUs); skipped
when `sbatch` is not on PATH or `sinfo` fails. The test cluster has no accounting database, so the
run polls job states with squeue (the flags in SLURM_TEST_FLAGS, described in docs/slurm.md).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEMO_EXPERIMENT, QUICK_SAMPLE, QUICK_TRAIN, REPO_ROOT

# On top of profiles/slurm, for a cluster without accounting (sacct cannot see jobs): squeue status
# (valid while MinJobAge >= 3 x the first status check delay), no account, quick first status check.
SLURM_TEST_FLAGS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
)
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _slurm_available() -> str | None:
    """None when a cluster answers, else why the test cannot run."""
    if shutil.which("sbatch") is None:
        return "no SLURM here: sbatch is not on PATH (start a test cluster with .ci/slurm-setup.sh)"
    try:
        sinfo = subprocess.run(["sinfo", "--noheader"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"SLURM does not answer: sinfo failed ({error})"
    if sinfo.returncode != 0:
        return f"SLURM does not answer: sinfo failed ({sinfo.stderr.strip()}); run .ci/slurm-setup.sh"
    return None


def _experiment(directory: Path) -> Path:
    from pipeline.audio.demo import write_demo_data

    audio = directory / "audio"
    write_demo_data(audio, seed=3, total_seconds=24)  # 4 pieces -> 2 shards of <= 3 items
    document = {
        "extends": str(DEMO_EXPERIMENT),
        "name": "slurmtest",
        "paths": {"audio_dir": str(audio), "work_dir": str(directory / "work")},
        "data": {"shard": {"max_items": 3}},
        "autoencoder": {"training": {"steps": 2, "eval_every": 2, "checkpoint_every": 2, "holdout_items": 1}},
        "train": QUICK_TRAIN,
        "sample": QUICK_SAMPLE,
        # One CPU per job so both shards' jobs run side by side on a 2-core node; each pre-encode job
        # asks SLURM for a GPU (the test cluster's are placeholders: torch still encodes on the CPU).
        "resources": {
            "train_autoencoder": {"cpus": 1},
            "pre_encode": {"cpus": 1, "gpus": 1},
        },
    }
    path = directory / "slurmtest.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _scontrol_job(job_id: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job_id], check=False, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, f"scontrol show job {job_id}: {shown.stderr}"
    return shown.stdout


def test_default_target_runs_as_slurm_jobs(tmp_path):
    reason = _slurm_available()
    if reason is not None:
        pytest.skip(reason)
    experiment = _experiment(tmp_path)
    slurm_logs = tmp_path / "slurm_logs"
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    command = [
        snakemake,
        "--profile",
        "profiles/slurm",
        "--config",
        f"experiment={experiment}",
        *SLURM_TEST_FLAGS,
        "--slurm-logdir",
        str(slurm_logs),
        "--slurm-keep-successful-logs",
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    # Every stage's outputs.
    work = tmp_path / "work"
    names = [shard["name"] for shard in json.loads((work / "shards" / "plan.json").read_text())["shards"]]
    assert len(names) == 2
    for name in names:
        assert (work / "shards" / f"{name}.tar").is_file(), name
        assert (work / "shards" / f"{name}.json").is_file(), name
        assert (work / "latents" / f"{name}.h5").is_file(), name
    assert sorted(p.stem for p in (work / "latents").glob("shard-*.h5")) == sorted(names)
    assert (work / "latents" / "index.h5").is_file()
    assert (work / "autoencoder" / "model.safetensors").is_file()
    assert (work / "autoencoder" / "model.json").is_file()
    assert "step 2/2" in (work / "logs" / "train_autoencoder.log").read_text()
    assert (work / "train" / "model.safetensors").is_file()
    assert (work / "samples" / "samples.json").is_file() and (work / "samples" / "sample-0000.wav").is_file()

    # SLURM ran every job: one sbatch job per rule and shard, each with its own SLURM log.
    submitted = {}  # SLURM job id -> rule (from the log path: <logdir>/rule_<rule>/[<wildcards>/]<id>.log)
    for _, slurm_id, log in SUBMITTED.findall(output):
        log_path = Path(log)
        assert log_path.is_file() and log_path.stem == slurm_id, log
        rule = next(part for part in log_path.relative_to(slurm_logs).parts if part.startswith("rule_"))
        submitted[slurm_id] = rule.removeprefix("rule_")
    rules = sorted(submitted.values())
    expected = [
        "index",
        "plan",
        "pre_encode_one",
        "pre_encode_one",
        "sample_audio",
        "shard_one",
        "shard_one",
        "shard_summary",
        "train_autoencoder",
        "train_model",
    ]
    assert rules == expected, output[-6000:]
    assert re.findall(r"^localrule (\w+):", output, re.MULTILINE) == ["all"]  # nothing else ran locally

    states = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(submitted)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert states.returncode == 0, states.stderr
    seen = dict(line.split("|") for line in states.stdout.split())
    assert seen == dict.fromkeys(submitted, "COMPLETED")

    # The pre-encode jobs asked SLURM for one GPU each (--gpus=1); the CPU stages asked for none.
    for slurm_id, rule in submitted.items():
        gpus = re.search(r"TresPerJob=\S*gpu:(\d+)", _scontrol_job(slurm_id))  # gres:gpu:1 / gres/gpu:1
        assert (gpus and gpus.group(1)) == ("1" if rule == "pre_encode_one" else None), (rule, slurm_id)
