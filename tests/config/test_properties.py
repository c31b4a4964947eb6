"""Property-based: random mutations of valid experiments either load or raise ConfigError, nothing else."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, Experiment, load_experiment, to_plain
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT

EXTREME_NUMBERS = st.sampled_from(
    [0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan, 0.5, -0.0]
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12), EXTREME_NUMBERS
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


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


@st.composite
def mutated(draw, base: dict) -> dict:
    document = yaml.safe_load(yaml.safe_dump(base))  # deep copy
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        action = draw(st.sampled_from(["drop", "retype", "unknown", "extreme"]))
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
        else:
            target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=10))] = draw(VALUES)
    return document


RESOLVED_DEMO = to_plain(load_experiment(DEMO_EXPERIMENT, base_dir=REPO_ROOT))
WRITTEN_DEMO = yaml.safe_load(DEMO_EXPERIMENT.read_text())
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load_written(path: Path, document: Any, overrides: list[str] = ()) -> None:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        experiment = load_experiment(path, overrides, base_dir=REPO_ROOT)
    except ConfigError as error:
        assert error.problems, "a ConfigError must carry at least one problem"
        assert all(problem.message for problem in error.problems)
        return
    assert isinstance(experiment, Experiment)


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


@SETTINGS
@given(
    keys=st.lists(st.sampled_from(["name", "seed", "paths", "data", "shard", "codec", "bits", "x", "0"]), max_size=4),
    value=st.one_of(VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()), st.text(max_size=10)),
)
def test_random_overrides(tmp_path, keys, value):
    _load_written(tmp_path / "exp.yaml", RESOLVED_DEMO, [".".join(keys) + "=" + value])


@SETTINGS
@given(document=VALUES)
def test_any_yaml_document(tmp_path, document):
    _load_written(tmp_path / "exp.yaml", document)
