"""Property-based: random mutations of valid experiments, random YAML text and random overrides either
load or raise ConfigError, nothing else; every problem is one line with its YAML path and file; loading
takes bounded time; and whatever validation accepts, the exported JSON Schema accepts too."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, Experiment, experiment_schema, load_experiment, to_plain
from pipeline.config.loader import MAX_DEPTH, MAX_NODES
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT

EXTREME_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**63,
        -(2**63),
        10**30,
        1e308,
        -1e308,
        5e-324,
        math.inf,
        -math.inf,
        math.nan,
        0.5,
        -0.0,
        1e-7,
        0.049,
        32768,
        2**31 + 1,
        10**400,
    ]
)
ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "true",
        "3",
        "1e400GB",
        "9" * 400 + "GB",
        "2GB",
        "~",
        "~nobody_here/x",
        "$HOME",
        "a\x00b",
        "\x1b[31m",
        "x" * 300,
        "../" * 50,
        "/",
        ".",
        "\n",
        "<<",
        "*a",
        "&a",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    EXTREME_NUMBERS,
    ODD_STRINGS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
# Per example: loading a hostile input is bounded, and well under this even on a busy machine.
SETTINGS = settings(
    max_examples=120, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SCHEMA = experiment_schema()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a key or list item in the document."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*prefix, index))
            found.extend(_paths(value, (*prefix, index)))
    return found


def _container(document: Any, path: tuple) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


def _nested(depth: int, flow_list: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if flow_list else {"a": value}
    return value


@st.composite
def mutated(draw, base: dict) -> dict:
    document = yaml.safe_load(yaml.safe_dump(base))  # deep copy
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        action = draw(st.sampled_from(["drop", "retype", "unknown", "extreme", "bool", "deep"]))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _container(document, path)
        if action == "drop":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = draw(VALUES)
        elif action == "extreme":
            parent[path[-1]] = draw(EXTREME_NUMBERS)
        elif action == "bool":
            parent[path[-1]] = draw(st.booleans())
        elif action == "deep":
            parent[path[-1]] = _nested(draw(st.integers(1, 2 * MAX_DEPTH)), draw(st.booleans()))
        else:
            target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=10))] = draw(VALUES)
    return document


RESOLVED_DEMO = to_plain(load_experiment(DEMO_EXPERIMENT, base_dir=REPO_ROOT))
WRITTEN_DEMO = yaml.safe_load(DEMO_EXPERIMENT.read_text())
DEMO_KEYS = sorted({".".join(str(part) for part in path) for path in _paths(RESOLVED_DEMO)})


def _check_loads_or_reports(path: Path, overrides: list[str] = ()) -> Experiment | None:
    """Load `path`: an Experiment, or a ConfigError whose every problem is one line naming where it is."""
    started = time.monotonic()
    try:
        experiment = load_experiment(path, overrides, base_dir=REPO_ROOT)
    except ConfigError as error:
        assert error.problems, "a ConfigError must carry at least one problem"
        for problem in error.problems:
            assert problem.message, problem
            assert problem.origin is not None, f"no file or command line for {problem}"
            assert "\n" not in str(problem) and "\r" not in str(problem), repr(str(problem))
            assert "Traceback" not in problem.message and "pydantic" not in problem.message.lower(), problem
        return None
    finally:
        assert time.monotonic() - started < 5
    assert isinstance(experiment, Experiment)
    return experiment


def _load_written(path: Path, document: Any, overrides: list[str] = ()) -> None:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    experiment = _check_loads_or_reports(path, overrides)
    if experiment is not None:
        # What validation accepts, the schema accepts: resolved, and as written when it has no extends.
        jsonschema.validate(to_plain(experiment), SCHEMA)
        if not overrides and isinstance(document, dict) and "extends" not in document:
            jsonschema.validate(document, SCHEMA)


@SETTINGS
@given(document=mutated(RESOLVED_DEMO))
def test_mutated_resolved_experiment(tmp_path, document):
    _load_written(tmp_path / "exp.yaml", document)


@SETTINGS
@given(document=mutated(WRITTEN_DEMO))
def test_mutated_experiment_with_extends(document):
    # Written beside the real demo so its relative `extends` paths resolve.
    target = DEMO_EXPERIMENT.parent / ".hypothesis-demo.yaml"
    try:
        _load_written(target, document)
    finally:
        target.unlink(missing_ok=True)


OVERRIDE_VALUES = st.one_of(
    VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    st.text(max_size=10),
    ODD_STRINGS,
    st.integers(1, 3 * MAX_DEPTH).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(["&a [*a]", "&a {b: *a}", "*undefined", "!!binary aGk=", "!!set {a, b}", "[1, 2", "a: b: c"]),
)


@SETTINGS
@given(
    keys=st.one_of(
        st.lists(
            st.sampled_from(["name", "seed", "paths", "data", "shard", "codec", "bits", "x", "0", "²"]), max_size=4
        ).map(".".join),
        st.sampled_from(DEMO_KEYS),
        st.integers(1, 2 * MAX_DEPTH).map(lambda depth: ".".join(["a"] * depth)),
    ),
    value=OVERRIDE_VALUES,
)
def test_random_overrides(tmp_path, keys, value):
    _load_written(tmp_path / "exp.yaml", RESOLVED_DEMO, [keys + "=" + value])


@SETTINGS
@given(document=VALUES)
def test_any_yaml_document(tmp_path, document):
    _load_written(tmp_path / "exp.yaml", document)


YAML_PIECES = st.sampled_from(
    list("abz09 :-,[]{}&*!|>'\"#%@?\n\t.<=~\\")
    + [
        "\x01",
        "\x7f",
        "\x85",
        "\ufeff",
        "\u2028",
        "\ud800",
        "<<: ",
        "&a ",
        "*a",
        "!!str ",
        "!!binary ",
        "!!set ",
        "!!python/object:os.system ",
        "!!float ",
        "!!int ",
        "---\n",
        "...\n",
        "name: x\n",
        "paths: {audio_dir: a}\n",
        "  ",
        "0x" + "f" * 40,
        "9" * 30,
        "? ",
        "%YAML 1.1\n",
    ]
)
DEMO_TEXT = yaml.safe_dump(RESOLVED_DEMO, sort_keys=False)


@SETTINGS
@given(pieces=st.lists(YAML_PIECES, max_size=80))
def test_random_yaml_text(tmp_path, pieces):
    path = tmp_path / "exp.yaml"
    path.write_text("".join(pieces), encoding="utf-8", errors="surrogatepass")
    _check_loads_or_reports(path)


@SETTINGS
@given(
    position=st.integers(0, len(DEMO_TEXT)),
    pieces=st.lists(YAML_PIECES, min_size=1, max_size=6),
    cut=st.integers(0, 20),
)
def test_damaged_demo_text(tmp_path, position, pieces, cut):
    """The demo as YAML text with a few characters cut out and odd pieces put in at one place."""
    path = tmp_path / "exp.yaml"
    path.write_text(
        DEMO_TEXT[:position] + "".join(pieces) + DEMO_TEXT[position + cut :], encoding="utf-8", errors="surrogatepass"
    )
    _check_loads_or_reports(path)


@SETTINGS
@given(levels=st.integers(1, 14), width=st.integers(1, 12), merge=st.booleans())
def test_nested_aliases_are_bounded(tmp_path, levels, width, merge):
    """Billion-laughs shapes of any size: they load when small and are refused, quickly, when they stand
    for more than MAX_NODES values."""
    if merge:  # nested merge keys instead of lists
        lines = ["l0: &l0 {" + ", ".join(f"k{i}: v" for i in range(width)) + "}"]
        lines += [
            f"l{n}: &l{n} {{" + ", ".join(f"m{i}: *l{n - 1}" for i in range(width)) + "}" for n in range(1, levels)
        ]
    else:
        lines = ["l0: &l0 [" + ", ".join(["v"] * width) + "]"]
        lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, levels)]
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\npaths: {audio_dir: a}\nlaughs:\n" + "".join(f"  {line}\n" for line in lines))
    assert _check_loads_or_reports(path) is None  # `laughs` is an unknown key at best
    stands_for = width**levels  # values the last line alone expands to
    try:
        load_experiment(path)
    except ConfigError as error:
        refused = any(f"more than {MAX_NODES} values" in problem.message for problem in error.problems)
        if stands_for > 10 * MAX_NODES:
            assert refused, error.report()
        if stands_for < MAX_NODES // 10:
            assert not refused, error.report()
