"""Loading: extends chains (deep merge, child wins, cycles), overrides, origins, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_experiment
from pipeline.config.loader import deep_merge, load_document, parse_yaml_value


def test_deep_merge_child_wins_and_mappings_merge():
    base = {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": 3}
    child = {"a": {"y": {"q": 2}}, "b": [9], "d": 4}
    assert deep_merge(base, child) == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [9], "c": 3, "d": 4}
    assert base == {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": 3}  # inputs untouched


def test_extends_chain_relative_to_each_file(write_yaml, tmp_path):
    write_yaml("presets/root.yaml", {"seed": 1, "data": {"sample_rate": 16000, "channels": 1}})
    write_yaml("presets/mid.yaml", {"extends": "root.yaml", "seed": 2, "data": {"channels": 2}})
    exp = write_yaml("exps/run.yaml", {"extends": ["../presets/mid.yaml"], "name": "run", "paths": {"audio_dir": "a"}})
    experiment = load_experiment(exp, base_dir=tmp_path)
    assert experiment.seed == 2
    assert experiment.data.sample_rate == 16000  # from root, through mid
    assert experiment.data.channels == 2  # mid overrides root


def test_extends_list_applies_in_order(write_yaml, tmp_path, minimal):
    write_yaml("one.yaml", {"seed": 1, "data": {"sample_rate": 8000}})
    write_yaml("two.yaml", {"seed": 2})
    exp = write_yaml("exp.yaml", {"extends": ["one.yaml", "two.yaml"], **minimal})
    experiment = load_experiment(exp, base_dir=tmp_path)
    assert (experiment.seed, experiment.data.sample_rate) == (2, 8000)


def test_extends_cycle_is_reported_with_the_chain(write_yaml, minimal):
    write_yaml("a.yaml", {"extends": "b.yaml", **minimal})
    write_yaml("b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError) as caught:
        load_experiment(write_yaml("a.yaml", {"extends": "b.yaml", **minimal}))
    (problem,) = caught.value.problems
    assert problem.path == "extends"
    assert "cycle" in problem.message and "a.yaml -> " in problem.message and "b.yaml" in problem.message


def test_self_extends_is_a_cycle(write_yaml, minimal):
    path = write_yaml("self.yaml", {"extends": "self.yaml", **minimal})
    with pytest.raises(ConfigError, match="cycle"):
        load_experiment(path)


def test_missing_extends_names_the_file_and_line(write_yaml, minimal):
    path = write_yaml("exp.yaml", "name: x\nextends: nowhere/base.yaml\npaths: {audio_dir: a}\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    (problem,) = caught.value.problems
    assert problem.path == "extends" and "nowhere/base.yaml" in problem.message
    assert problem.origin.source == str(path) and problem.origin.line == 2


def test_extends_of_wrong_type(write_yaml, minimal):
    with pytest.raises(ConfigError, match="expected a file path"):
        load_experiment(write_yaml("exp.yaml", {"extends": 5, **minimal}))


def test_overrides_are_typed_as_yaml(write_yaml, tmp_path, minimal):
    exp = write_yaml("exp.yaml", minimal)
    experiment = load_experiment(
        exp,
        ["seed=7", "data.max_item_seconds=1e1", "data.extensions=[wav, FLAC]", "data.shard.max_bytes=2GB"],
        base_dir=tmp_path,
    )
    assert experiment.seed == 7
    assert experiment.data.max_item_seconds == 10.0
    assert experiment.data.extensions == (".flac", ".wav")
    assert experiment.data.shard.max_bytes == 2_000_000_000


def test_override_creates_missing_sections(write_yaml, tmp_path, minimal):
    experiment = load_experiment(write_yaml("exp.yaml", minimal), ["data.shard.max_items=3"], base_dir=tmp_path)
    assert experiment.data.shard.max_items == 3


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("seed", "not of the form"),
        ("=3", "not of the form"),
        ("a..b=1", "not of the form"),
        ("seed=[1,", "not valid YAML"),
    ],
)
def test_malformed_overrides(write_yaml, minimal, override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_experiment(write_yaml("exp.yaml", minimal), [override])


def test_override_through_a_scalar_is_reported(write_yaml, minimal):
    with pytest.raises(ConfigError) as caught:
        load_experiment(write_yaml("exp.yaml", {**minimal, "seed": 1}), ["seed.x=1"])
    assert caught.value.problems[0].path == "seed" and "not a mapping" in caught.value.problems[0].message


def test_yaml_syntax_error_has_file_and_line(write_yaml):
    path = write_yaml("broken.yaml", "name: x\npaths: {audio_dir: a\nseed: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    (problem,) = caught.value.problems
    assert "invalid YAML" in problem.message and problem.origin.source == str(path) and problem.origin.line


def test_duplicate_keys_are_reported(write_yaml):
    path = write_yaml("dup.yaml", "name: x\nseed: 1\npaths: {audio_dir: a}\nseed: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    (problem,) = caught.value.problems
    assert problem.path == "seed" and "duplicate" in problem.message and problem.origin.line == 4


def test_non_mapping_document(write_yaml):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_experiment(write_yaml("list.yaml", "- 1\n- 2\n"))


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_experiment(tmp_path / "absent.yaml")


def test_origins_point_at_the_file_that_set_the_value(write_yaml):
    base = write_yaml("base.yaml", "data:\n  sample_rate: 16000\n  channels: 1\n")
    exp = write_yaml("exp.yaml", "extends: base.yaml\nname: x\npaths: {audio_dir: a}\ndata:\n  channels: 2\n")
    document = load_document(exp, ["seed=3"])
    assert document.origin_of(("data", "sample_rate")).source == str(base)
    assert str(document.origin_of(("data", "channels"))) == f"{exp}:5"
    assert "command line" in document.origin_of(("seed",)).source
    assert document.origin_of(("data", "shard", "max_items")).source == str(exp)  # nearest known parent


def test_relative_paths_resolve_against_the_working_directory(write_yaml, tmp_path, monkeypatch, minimal):
    exp = write_yaml("configs/exp.yaml", minimal)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    experiment = load_experiment(exp)
    assert experiment.paths.audio_dir == elsewhere / "audio"
    assert experiment.work_dir == elsewhere / "results" / "tiny"  # default results/<name>


def test_absolute_and_home_paths(write_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    exp = write_yaml("exp.yaml", {"name": "x", "paths": {"audio_dir": "~/music", "work_dir": "/abs/../out"}})
    experiment = load_experiment(exp, base_dir=tmp_path)
    assert experiment.paths.audio_dir == tmp_path / "home" / "music"
    assert experiment.work_dir == Path("/out")


def test_exponent_floats_without_a_dot():
    assert parse_yaml_value("1e-4") == pytest.approx(1e-4)
    assert parse_yaml_value("3") == 3 and parse_yaml_value("abc") == "abc"
