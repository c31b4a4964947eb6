"""Hostile or broken experiment files: each is one config problem, in bounded time and memory, never a crash.

Issue 10: control characters, recursive aliases, deep nesting (file or override), long extends chains,
path components over 255 bytes, a symlink-loop experiment path, a 1 KB "billion laughs" file; and YAML
merge keys overridden by explicit keys (valid YAML, not a duplicate key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_experiment
from pipeline.config.loader import MAX_DEPTH, MAX_EXTENDS_DEPTH, MAX_FILE_BYTES, load_document
from tests.conftest import REPO_ROOT

VALID = "name: x\npaths: {audio_dir: audio}\n"


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """~1 KB of nested aliases standing for width**levels values."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return VALID + "\n".join(lines) + "\n"


HOSTILE = {
    "control-character": VALID + "seed: 1\x01\n",
    "bell-in-a-key": "name: x\x07\npaths: {audio_dir: audio}\n",
    "recursive-mapping-alias": VALID + "data: &a\n  shard: *a\n",
    "recursive-list-alias": VALID + "data: {extensions: &e [wav, *e]}\n",
    "deep-flow-nesting": VALID + "data: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-mapping-nesting": VALID + "data: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "deep-block-nesting": VALID + "".join(" " * depth + f"k{depth}:\n" for depth in range(300)),
    "billion-laughs": billion_laughs(),
    "huge-hex-integer": VALID + "seed: 0x" + "f" * 6000 + "\n",
    "huge-decimal-integer": VALID + "seed: " + "9" * 5000 + "\n",
    "bad-merge-value": VALID + "data:\n  <<: 3\n",
}


def _one_problem(path: Path, overrides: list[str] = ()) -> str:
    """The report of the single problem loading `path` raises, as the CLI prints it."""
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, overrides)
    assert len(caught.value.problems) == 1, caught.value.report()
    problem = caught.value.problems[0]
    assert problem.origin is not None  # the file (of the extends chain) or the command line
    assert problem.origin.source.startswith(str(path.parent)) or "command line" in problem.origin.source
    assert "\n" not in str(problem)
    return str(problem)


@pytest.mark.parametrize("name", [name for name in HOSTILE if name != "billion-laughs"])
def test_hostile_yaml_is_one_config_problem(write_yaml, name):
    started = time.monotonic()
    _one_problem(write_yaml("exp.yaml", HOSTILE[name]))
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("control-character", "control character '\\x01'"),
        ("recursive-mapping-alias", "recursive alias"),
        ("deep-flow-nesting", f"nested deeper than {MAX_DEPTH} levels"),
        ("deep-block-nesting", f"nested deeper than {MAX_DEPTH} levels"),
    ],
)
def test_hostile_yaml_says_why_and_where(write_yaml, name, fragment):
    path = write_yaml("exp.yaml", HOSTILE[name])
    report = _one_problem(path)
    assert fragment in report and f"({path}:" in report  # the file and the line


_BOUNDED_LOAD = """
import json, resource, sys
from pipeline.config import ConfigError, load_experiment
import pipeline.config.hashing  # every import done: only loading is measured
with open("/proc/self/status") as status:
    size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
limit = size_kb * 1024 + (512 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {}
for path in sys.argv[1:]:
    try:
        load_experiment(path)
        results[path] = "loaded"
    except ConfigError as error:
        results[path] = [str(problem) for problem in error.problems]
print(json.dumps(results))
"""


def test_hostile_files_load_in_bounded_time_and_memory(tmp_path):
    """In a child process with 512 MiB of address space to spare and a minute in all: today the
    billion-laughs file alone never finishes."""
    paths = []
    for name, text in HOSTILE.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", _BOUNDED_LOAD, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout)
    for path in paths:
        assert isinstance(results[str(path)], list) and len(results[str(path)]) == 1, (path.name, results[str(path)])
    assert "more than 100000 values" in results[str(tmp_path / "billion-laughs.yaml")][0]


def test_billion_laughs_is_refused_before_it_is_built(write_yaml):
    path = write_yaml("laughs.yaml", billion_laughs())
    assert len(path.read_bytes()) < 1100
    started = time.monotonic()
    document = load_document(path)
    assert time.monotonic() - started < 5
    assert [p.message for p in document.problems] == [
        "rejected: more than 100000 values (counting what aliases repeat)"
    ]


def test_a_few_aliases_are_fine(write_yaml, tmp_path):
    text = VALID + "resources:\n  train: &big {cpus: 8, mem_mb: 64000}\n  sample: *big\n"
    experiment = load_experiment(write_yaml("exp.yaml", text), base_dir=tmp_path)
    assert experiment.resources.sample.cpus == 8 and experiment.resources.sample.mem_mb == 64000


def test_deep_override_path(write_yaml):
    path = write_yaml("exp.yaml", VALID)
    report = _one_problem(path, [".".join(["a"] * 5000) + "=1"])
    assert "override path of 5000 keys" in report and "command line" in report


def test_deep_override_value(write_yaml):
    path = write_yaml("exp.yaml", VALID)
    report = _one_problem(path, ["data.extensions=" + "[" * 3000 + "]" * 3000])
    assert report.startswith("data.extensions: override value is rejected: nested deeper than")


def test_override_depth_counts_the_path(write_yaml):
    path = write_yaml("exp.yaml", VALID)
    keys = ".".join(["a"] * (MAX_DEPTH - 3))
    report = _one_problem(path, [keys + "=[[[[1]]]]"])
    assert "override value is rejected: nested deeper than" in report


def test_override_of_huge_or_odd_list_index(write_yaml):
    path = write_yaml("exp.yaml", VALID + "data: {extensions: [wav]}\n")
    for index in ("9" * 5000, "²"):
        with pytest.raises(ConfigError) as caught:
            load_experiment(path, [f"data.extensions.{index}=flac"])
        assert "list index out of range" in caught.value.report()


def test_long_extends_chain_is_capped(tmp_path):
    for index in range(200):
        (tmp_path / f"base{index}.yaml").write_text(f"extends: base{index + 1}.yaml\nseed: {index}\n")
    (tmp_path / "base200.yaml").write_text(VALID)
    report = _one_problem(tmp_path / "base0.yaml")
    assert f"extends chain deeper than {MAX_EXTENDS_DEPTH} files" in report


def test_wide_extends_fan_out_is_capped(tmp_path):
    """Each file extends the next one three times: 3**12 reads without a cap."""
    for index in range(12):
        (tmp_path / f"b{index}.yaml").write_text(
            f"extends: [b{index + 1}.yaml, b{index + 1}.yaml, b{index + 1}.yaml]\n"
        )
    (tmp_path / "b12.yaml").write_text(VALID)
    started = time.monotonic()
    report = _one_problem(tmp_path / "b0.yaml")
    assert "files read through extends" in report and time.monotonic() - started < 10


def test_extends_chains_within_the_cap_still_work(tmp_path):
    for index in range(MAX_EXTENDS_DEPTH - 1):
        (tmp_path / f"c{index}.yaml").write_text(f"extends: c{index + 1}.yaml\n")
    (tmp_path / f"c{MAX_EXTENDS_DEPTH - 1}.yaml").write_text(VALID + "seed: 7\n")
    assert load_experiment(tmp_path / "c0.yaml", base_dir=tmp_path).seed == 7


def test_extends_name_over_255_bytes(write_yaml):
    path = write_yaml("exp.yaml", VALID + f"extends: {'a' * 300}.yaml\n")
    report = _one_problem(path)
    assert report.startswith("extends: cannot use") and "File name too long" in report


def test_experiment_path_component_over_255_bytes(tmp_path):
    report = _one_problem(tmp_path / ("a" * 300 + ".yaml"))
    assert "cannot read the file" in report and "File name too long" in report


def test_symlink_loop_experiment_path(tmp_path):
    (tmp_path / "one.yaml").symlink_to(tmp_path / "two.yaml")
    (tmp_path / "two.yaml").symlink_to(tmp_path / "one.yaml")
    report = _one_problem(tmp_path / "one.yaml")
    assert "cannot read the file" in report and "symbolic links" in report


def test_symlink_loop_in_extends(write_yaml, tmp_path):
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    report = _one_problem(write_yaml("exp.yaml", VALID + "extends: loop.yaml\n"))
    assert report.startswith("extends: cannot use 'loop.yaml'") and "symbolic links" in report


def test_a_fifo_or_device_is_not_read(tmp_path):
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in _one_problem(fifo)  # opening it would block for ever
    assert "not a regular file" in _one_problem(Path("/dev/zero"))


def test_oversized_file(write_yaml):
    path = write_yaml("big.yaml", VALID + "# " + "x" * MAX_FILE_BYTES + "\n")
    assert "larger than 256 KiB" in _one_problem(path)


def test_problem_lines_are_single_lines(write_yaml):
    path = write_yaml("exp.yaml", VALID + '"a\\nb\\x1b[31m": 1\n')
    report = _one_problem(path)
    assert report.startswith("a\\nb\\x1b[31m: unknown key")


# --- merge keys -------------------------------------------------------------------------------------------

MERGED = """\
name: x
paths: {audio_dir: audio}
resources:
  train: &gpu_job {cpus: 8, gpus: 1, mem_mb: 64000}
  sample:
    <<: *gpu_job
    gpus: 2
"""


def test_merge_key_with_an_override_is_not_a_duplicate(write_yaml, tmp_path):
    path = write_yaml("exp.yaml", MERGED)
    experiment = load_experiment(path, base_dir=tmp_path)
    assert (experiment.resources.sample.cpus, experiment.resources.sample.gpus) == (8, 2)
    origins = load_document(path).origins
    assert origins[("resources", "sample", "gpus")].line == 7  # the explicit key
    assert origins[("resources", "sample", "cpus")].line == 4  # merged: where it was written


def test_merge_of_a_list_of_mappings_first_wins(write_yaml, tmp_path):
    text = MERGED.replace(
        "  sample:\n    <<: *gpu_job", "  plan: &small {cpus: 2, mem_mb: 100}\n  sample:\n    <<: [*small, *gpu_job]"
    )
    experiment = load_experiment(write_yaml("exp.yaml", text), base_dir=tmp_path)
    assert (experiment.resources.sample.cpus, experiment.resources.sample.mem_mb, experiment.resources.sample.gpus) == (
        2,
        100,
        2,
    )


def test_true_duplicates_beside_a_merge_key_are_still_errors(write_yaml):
    path = write_yaml("exp.yaml", MERGED + "    gpus: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    (problem,) = caught.value.problems
    assert problem.path == "resources.sample.gpus" and "duplicate key (first at line 7)" in problem.message
    assert problem.origin.line == 8


def test_merge_keys_report_problems_at_the_merged_path(write_yaml):
    path = write_yaml("exp.yaml", MERGED.replace("gpus: 1,", "gpus: -1,").replace("    gpus: 2\n", ""))
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    paths = {problem.path: problem for problem in caught.value.problems}
    assert set(paths) == {"resources.train.gpus", "resources.sample.gpus"}
    assert paths["resources.sample.gpus"].origin.line == 4
