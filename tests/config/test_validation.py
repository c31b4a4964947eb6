"""Validation: every problem at once, dotted paths, origins, plain words, frozen results."""

from __future__ import annotations

import pydantic
import pytest

from pipeline.config import ConfigError, load_experiment
from tests.conftest import DEMO_EXPERIMENT

MANY_MISTAKES = """\
extends: [../nowhere/base.yaml]
name: run
seed: -3
paths: {audio_dir: data/demo}
data:
  sample_rate: fast
  chanels: 2
  shard: {max_items: -5, max_bytes: 3 parsecs}
  codec: {type: mp4}
resources:
  train: {gpus: 1.5}
"""


def _problems(path, overrides=()):
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, overrides)
    return {problem.path: problem for problem in caught.value.problems}


def test_every_mistake_is_reported_with_path_file_and_line(write_yaml):
    path = write_yaml("exps/bad.yaml", MANY_MISTAKES)
    problems = _problems(path)
    assert set(problems) == {
        "extends",
        "seed",
        "data.sample_rate",
        "data.chanels",
        "data.shard.max_items",
        "data.shard.max_bytes",
        "data.codec",
        "resources.train.gpus",
    }
    expected_lines = {"extends": 1, "seed": 3, "data.sample_rate": 6, "data.chanels": 7, "data.codec": 9}
    for dotted, line in expected_lines.items():
        assert problems[dotted].origin.source == str(path)
        assert problems[dotted].origin.line == line, dotted
    assert "must be >= 0" in problems["seed"].message and "-3" in problems["seed"].message
    assert "did you mean 'channels'" in problems["data.chanels"].message
    assert "integer" in problems["data.sample_rate"].message and "'fast'" in problems["data.sample_rate"].message
    assert "'flac', 'wav'" in problems["data.codec"].message
    assert "nowhere/base.yaml" in problems["extends"].message
    assert "2GB" in problems["data.shard.max_bytes"].message


def test_report_is_plain_text_listing_each_problem(write_yaml):
    path = write_yaml("bad.yaml", MANY_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    report = caught.value.report()
    assert report.startswith("8 problems in experiment")
    assert "data.chanels: unknown key (did you mean 'channels'?)" in report
    assert "Traceback" not in report and "pydantic" not in report.lower()


def test_missing_required_key_says_what_is_expected(write_yaml):
    problems = _problems(write_yaml("exp.yaml", {"paths": {"audio_dir": "a"}}))
    assert problems["name"].message.startswith("required key is missing")
    assert "letters, digits" in problems["name"].message


def test_override_problems_name_the_command_line(write_yaml, minimal):
    problems = _problems(write_yaml("exp.yaml", minimal), ["data.sample_rate=-1"])
    assert "command line 'data.sample_rate=-1'" in str(problems["data.sample_rate"].origin)


def test_cross_field_check(write_yaml, minimal):
    problems = _problems(write_yaml("exp.yaml", {**minimal, "data": {"min_item_seconds": 5, "max_item_seconds": 2}}))
    assert "min_item_seconds (5.0) must not exceed max_item_seconds (2.0)" in problems["data"].message


def test_nan_and_infinity_are_rejected(write_yaml, minimal):
    problems = _problems(write_yaml("exp.yaml", {**minimal, "data": {"min_item_seconds": float("inf")}}))
    assert "data.min_item_seconds" in problems


def test_nested_component_error_path_drops_the_union_tag(write_yaml, minimal):
    problems = _problems(write_yaml("exp.yaml", {**minimal, "data": {"codec": {"type": "flac", "bits": 12}}}))
    assert set(problems) == {"data.codec.bits"}
    problems = _problems(write_yaml("exp.yaml", {**minimal, "data": {"codec": {"type": "wav", "level": 1}}}))
    assert "data.codec.level" in problems and "bits" in problems["data.codec.level"].message


def test_component_without_type(write_yaml, minimal):
    problems = _problems(write_yaml("exp.yaml", {**minimal, "data": {"codec": {"bits": 16}}}))
    assert "needs a 'type' key" in problems["data.codec"].message


def test_loaded_experiment_is_frozen():
    experiment = load_experiment(DEMO_EXPERIMENT)
    with pytest.raises(pydantic.ValidationError):
        experiment.seed = 3
    with pytest.raises(pydantic.ValidationError):
        experiment.data.shard.max_items = 3
    assert isinstance(experiment.data.extensions, tuple)


def test_demo_experiment_is_valid():
    experiment = load_experiment(DEMO_EXPERIMENT)
    assert experiment.name == "demo"
    assert experiment.data.sample_rate == 16000 and experiment.data.channels == 1
