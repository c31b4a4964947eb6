"""The `pipeline` command as users run it: exit codes, messages, no tracebacks for config mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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


def test_plan_and_shard_commands(tmp_path):
    from pipeline.audio.demo import write_demo_data

    write_demo_data(tmp_path / "audio", seed=1, total_seconds=30)
    overrides = [
        f"paths.audio_dir={tmp_path / 'audio'}",
        f"paths.work_dir={tmp_path / 'work'}",
        "data.shard.max_items=2",
    ]
    missing_plan = run_cli("shard", str(DEMO_EXPERIMENT), *overrides, "--shard", "0")
    assert missing_plan.returncode == 1 and "run `pipeline plan` first" in missing_plan.stderr
    planned = run_cli("plan", str(DEMO_EXPERIMENT), *overrides)
    assert planned.returncode == 0 and "shards" in planned.stdout
    assert (tmp_path / "work" / "experiment.json").is_file()
    one = run_cli("shard", str(DEMO_EXPERIMENT), *overrides, "--shard", "0")
    assert one.returncode == 0 and "written" in one.stdout
    again = run_cli("shard", str(DEMO_EXPERIMENT), *overrides, "--shard", "0")
    assert "up to date" in again.stdout
    out_of_range = run_cli("shard", str(DEMO_EXPERIMENT), *overrides, "--shard", "999")
    assert (
        out_of_range.returncode == 1
        and "shard 999 is not in the plan" in out_of_range.stderr
        and "Traceback" not in out_of_range.stderr
    )
    summary = run_cli("shard-summary", str(DEMO_EXPERIMENT), *overrides)
    assert summary.returncode == 1 and "NOT YET WRITTEN" in summary.stdout
    everything = run_cli("shard", str(DEMO_EXPERIMENT), *overrides, "--all", "--workers", "2")
    assert everything.returncode == 0 and "0 rejected" in everything.stdout
    assert run_cli("shard-summary", str(DEMO_EXPERIMENT), *overrides).returncode == 0


def test_plan_with_missing_audio_dir(tmp_path):
    result = run_cli("plan", str(DEMO_EXPERIMENT), f"paths.audio_dir={tmp_path / 'nope'}", f"paths.work_dir={tmp_path}")
    assert result.returncode == 1 and "paths.audio_dir does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def _with_closed_stdout(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI with stdout a pipe whose reader is already gone, as in `pipeline ... | head -1`."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
        )
    finally:
        os.close(write)


def test_a_closed_stdout_pipe_ends_quietly():
    for args in (("validate", str(DEMO_EXPERIMENT)), ("show", str(DEMO_EXPERIMENT)), ("schema",)):
        result = _with_closed_stdout(*args)
        assert result.returncode == 141, (args, result.stderr)
        assert result.stderr == "", (args, result.stderr)  # no BrokenPipeError traceback, no "Exception ignored"


def test_validate_piped_into_head_prints_one_line():
    result = subprocess.run(
        f"'{sys.executable}' -m pipeline show '{DEMO_EXPERIMENT}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.stdout == "name: demo\n" and "Traceback" not in result.stderr and "Error" not in result.stderr


def test_hostile_experiment_files_are_config_errors_not_tracebacks(tmp_path):
    laughs = "name: x\npaths: {audio_dir: a}\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
    )
    (tmp_path / "laughs.yaml").write_text(laughs)
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "control.yaml").write_text("name: x\x1b\npaths: {audio_dir: a}\n")
    for name in ("laughs.yaml", "loop.yaml", "control.yaml"):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "validate", str(tmp_path / name)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
        )
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr
        problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
        assert len(problems) == 1 and str(tmp_path / name) in problems[0], (name, result.stderr)


# --- user mistakes are one line; anything else keeps its traceback (in-process, through `main`) ---
def _demo_args(tmp_path) -> list[str]:
    return [str(DEMO_EXPERIMENT), f"paths.audio_dir={tmp_path / 'audio'}", f"paths.work_dir={tmp_path / 'work'}"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_user_mistakes_print_one_line_naming_them(tmp_path, capsys):
    from pipeline.audio.demo import write_demo_data
    from pipeline.cli import main

    assert main(["shard", *_demo_args(tmp_path), "--shard", "0"]) == 1
    assert "no plan at" in _one_line_error(capsys)
    assert main(["plan", *_demo_args(tmp_path)]) == 1
    assert "paths.audio_dir does not exist" in _one_line_error(capsys)
    write_demo_data(tmp_path / "audio", seed=1, total_seconds=12)
    assert main(["plan", *_demo_args(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["shard", *_demo_args(tmp_path), "--shard", "99"]) == 1
    assert "shard 99 is not in the plan" in _one_line_error(capsys)
    assert main(["pre-encode", *_demo_args(tmp_path), "--shard", "99", "--quiet"]) == 1
    assert "shard 99 is not in the plan" in _one_line_error(capsys)
    assert main(["pre-encode", *_demo_args(tmp_path), "--shard", "0", "--quiet"]) == 1
    assert "shard 0 is not written" in _one_line_error(capsys)
    assert main(["import-sat", str(tmp_path / "missing.json")]) == 1
    assert "missing.json: no such file" in _one_line_error(capsys)


@pytest.mark.parametrize("bug", [IndexError, KeyError, FileNotFoundError])
def test_a_bug_deep_in_a_stage_keeps_its_traceback(tmp_path, monkeypatch, bug):
    """The exception types that user mistakes used to raise are not swallowed when a bug raises them."""
    import pipeline.shards.plan
    from pipeline.cli import main

    def broken(experiment):
        raise bug("list index out of range, deep inside the plan")

    monkeypatch.setattr(pipeline.shards.plan, "build_plan", broken)
    with pytest.raises(bug, match="deep inside the plan"):
        main(["plan", *_demo_args(tmp_path)])


def test_a_bug_in_the_shard_writer_keeps_its_traceback(tmp_path, monkeypatch):
    import pipeline.shards.writer
    from pipeline.audio.demo import write_demo_data
    from pipeline.cli import main

    write_demo_data(tmp_path / "audio", seed=1, total_seconds=12)
    assert main(["plan", *_demo_args(tmp_path)]) == 0

    def broken(*args, **kwargs):
        return [][1]

    monkeypatch.setattr(pipeline.shards.writer, "encode_source", broken)  # deep: per source file, in the writer
    with pytest.raises(IndexError):
        main(["shard", *_demo_args(tmp_path), "--shard", "0"])
