"""A SIGKILLed shard run leaves nothing that looks whole; the workflow produces what the CLI does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.audio.demo import write_demo_data
from tests.conftest import QUICK_SAMPLE, QUICK_TRAIN, REPO_ROOT


def _experiment(directory: Path, audio_dir: Path, work: str, with_autoencoder: bool = True, **data) -> Path:
    document = {
        "extends": str(REPO_ROOT / "configs/experiments/demo.yaml"),
        "name": "killtest",
        "paths": {"audio_dir": str(audio_dir), "work_dir": str(directory / work)},
        "data": data,
        # the default target also trains the demo autoencoder: a few steps are enough here
        "autoencoder": {"training": {"steps": 2, "eval_every": 2, "checkpoint_every": 2, "holdout_items": 1}}
        if with_autoencoder
        else None,  # the demo's mono autoencoder does not fit other data
        "train": QUICK_TRAIN if with_autoencoder else None,
        "sample": QUICK_SAMPLE,
    }
    path = directory / f"{work}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=REPO_ROOT, **kwargs
    )


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_sigkill_mid_write_then_rerun_equals_uninterrupted(tmp_path):
    audio = tmp_path / "audio"
    write_demo_data(audio, seed=5, total_seconds=150)
    big = {
        "sample_rate": 44100,
        "channels": 2,
        "shard": {"max_items": 1000, "max_bytes": "1GB"},
        "codec": {"type": "flac", "bits": 24, "compression_level": 1.0},
    }
    killed_exp = _experiment(tmp_path, audio, "killed", with_autoencoder=False, **big)
    clean_exp = _experiment(tmp_path, audio, "clean", with_autoencoder=False, **big)
    assert _cli("plan", str(killed_exp)).returncode == 0
    shards = tmp_path / "killed" / "shards"

    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "shard", str(killed_exp), "--shard", "0"], cwd=REPO_ROOT
    )
    deadline = time.monotonic() + 60
    while not list(shards.glob(".shard-000000.tar.tmp-*")):
        assert process.poll() is None, "the shard run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(0.2)  # let it write part of the tar
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (shards / "shard-000000.tar").exists() and not (shards / "shard-000000.json").exists()
    assert list(shards.glob(".shard-000000.tar.tmp-*"))  # the half-written file has a temp name

    rerun = _cli("shard", str(killed_exp), "--all", "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert _cli("plan", str(clean_exp)).returncode == 0
    assert _cli("shard", str(clean_exp), "--all", "--quiet").returncode == 0
    killed, clean = _files(shards), _files(tmp_path / "clean" / "shards")
    assert not [name for name in killed if ".tmp-" in name]
    plan_independent = {name: data for name, data in killed.items() if name != "plan.json"}
    assert plan_independent == {name: data for name, data in clean.items() if name != "plan.json"}


def test_snakemake_local_profile_matches_the_cli(tmp_path):
    audio = tmp_path / "audio"
    write_demo_data(audio, seed=2, total_seconds=60)
    small_shards = {"shard": {"max_items": 3}}
    via_snakemake = _experiment(tmp_path, audio, "snake", **small_shards)
    via_cli = _experiment(tmp_path, audio, "cli", **small_shards)
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    result = subprocess.run(  # the default target (`all`) includes the shards
        [snakemake, "--profile", "profiles/local", "--config", f"experiment={via_snakemake}", "--cores", "2"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained = tmp_path / "snake" / "autoencoder"
    assert (trained / "model.safetensors").is_file() and (trained / "model.json").is_file()
    assert "step 2/2" in (tmp_path / "snake" / "logs" / "train_autoencoder.log").read_text()
    # ... and, the demo having a train section, the DiT on the latents and the samples it makes.
    assert (tmp_path / "snake" / "train" / "model.safetensors").is_file()
    assert "step 2/2" in (tmp_path / "snake" / "logs" / "train.log").read_text()
    samples = json.loads((tmp_path / "snake" / "samples" / "samples.json").read_text())
    assert [entry["path"] for entry in samples["files"]] == ["sample-0000.wav"]
    assert _cli("plan", str(via_cli)).returncode == 0
    assert _cli("shard", str(via_cli), "--all", "--workers", "2", "--quiet").returncode == 0
    from_snakemake = _files(tmp_path / "snake" / "shards")
    from_cli = _files(tmp_path / "cli" / "shards")
    assert sum(name.endswith(".tar") for name in from_cli) >= 2
    assert from_snakemake.keys() == from_cli.keys()
    for name in from_cli:
        if name != "plan.json":  # the plan holds the absolute audio_dir, identical here; compared below
            assert from_snakemake[name] == from_cli[name], name
    assert from_snakemake["plan.json"] == from_cli["plan.json"]

    # Nothing to do on a second run.
    again = subprocess.run(
        [snakemake, "--profile", "profiles/local", "--config", f"experiment={via_snakemake}", "--cores", "2", "shard"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def _with_shards_per_job(path: Path, shards_per_job: int) -> Path:
    document = yaml.safe_load(path.read_text())
    document["resources"] = {"shard": {"shards_per_job": shards_per_job}}
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_shard_job_killed_after_its_first_shard_resumes_at_the_next(tmp_path):
    """`pipeline shard --job J` (what the workflow runs): K shards one after another, then the job's
    record. Killed half-way it has no record; its rerun skips the shards it finished."""
    audio = tmp_path / "audio"
    write_demo_data(audio, seed=4, total_seconds=60)
    one_item_shards = {"shard": {"max_items": 1}, "codec": {"type": "flac", "bits": 24, "compression_level": 1.0}}
    killed_exp = _with_shards_per_job(_experiment(tmp_path, audio, "killed", False, **one_item_shards), 3)
    clean_exp = _with_shards_per_job(_experiment(tmp_path, audio, "clean", False, **one_item_shards), 3)
    for experiment in (killed_exp, clean_exp):
        assert _cli("plan", str(experiment)).returncode == 0
    shards = tmp_path / "killed" / "shards"
    record = shards / "jobs" / "job-000000.json"

    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "shard", str(killed_exp), "--job", "0", "--quiet"], cwd=REPO_ROOT
    )
    deadline = time.monotonic() + 60
    while not list(shards.glob(".shard-000001.tar.tmp-*")):  # shard 0 is done, shard 1 is being written
        assert process.poll() is None, "the shard job ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (shards / "shard-000000.json").is_file() and not (shards / "shard-000001.json").exists()
    assert not record.exists()

    rerun = _cli("shard", str(killed_exp), "--job", "0", "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert "shard 0: " in rerun.stdout and "(up to date)" in rerun.stdout.splitlines()[0]
    written = json.loads(record.read_text())
    assert written["shards"] == [0, 1, 2] and [r["skipped"] for r in written["results"]] == [True, False, False]
    assert not (shards / "shard-000003.tar").exists()  # job 1's

    assert _cli("shard", str(clean_exp), "--job", "0", "--quiet").returncode == 0
    killed, clean = _files(shards), _files(tmp_path / "clean" / "shards")
    assert {n: d for n, d in killed.items() if n != "plan.json"} == {n: d for n, d in clean.items() if n != "plan.json"}

    jobs = json.loads((shards / "plan.json").read_text())["shards"]
    missing = _cli("shard", str(killed_exp), "--job", "99")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
    assert f"{len(jobs)} shard(s) at 3 per job (resources.shard.shards_per_job)" in missing.stderr
