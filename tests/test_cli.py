"""The `pipeline` command as users run it: exit codes, messages, no tracebacks for config mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from pipeline.config import load_experiment, to_plain
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT


def run_cli(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_demo_exits_zero_and_prints_hashes():
    result = run_cli("validate", str(DEMO_EXPERIMENT))
    assert result.returncode == 0, result.stderr
    assert "ok: experiment 'demo'" in result.stdout
    assert "pre_encode hash:" in result.stdout


def test_validate_reports_all_mistakes_with_exit_2_and_no_traceback(tmp_path):
    bad = tmp_path / "exps" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text(
        "extends: ../missing/base.yaml\nname: bad\nseed: 1.5\npaths: {audio_dir: a, wrk_dir: b}\n"
        "data: {sample_rate: -8000, channels: 7}\n"
    )
    result = run_cli("validate", str(bad), "data.shard.max_items=zero")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    expected = {
        "extends": "missing/base.yaml",
        "seed": f"{bad}:3",
        "paths.wrk_dir": "did you mean 'work_dir'",
        "data.sample_rate": "must be >= 1000",
        "data.channels": f"{bad}:5",
        "data.shard.max_items": "command line",
    }
    assert len(lines) == len(expected), result.stderr
    for path, fragment in expected.items():
        assert any(line.startswith(f"  - {path}: ") and fragment in line for line in lines), (path, result.stderr)


def test_show_prints_the_resolved_experiment(tmp_path):
    result = run_cli("show", str(DEMO_EXPERIMENT), "seed=99")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["seed"] == 99 and "extends" not in shown
    expected = to_plain(load_experiment(DEMO_EXPERIMENT, ["seed=99"], base_dir=REPO_ROOT))
    assert shown == expected
    # What `show` prints is itself a valid, equivalent experiment.
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(result.stdout)
    assert to_plain(load_experiment(resolved)) == expected


def test_schema_command(tmp_path):
    result = run_cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["$schema"].startswith("https://json-schema.org/")
    assert run_cli("schema", "-o", str(tmp_path / "s.json")).returncode == 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(result.stdout)


def test_demo_data_command(tmp_path):
    result = run_cli("demo-data", str(tmp_path / "audio"), "--seconds", "20")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert len(list((tmp_path / "audio").rglob("*.wav"))) >= 1


def test_usage_errors_exit_2():
    assert run_cli().returncode == 2
    assert run_cli("validate").returncode == 2
