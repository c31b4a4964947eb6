"""The Markdown experiment reference generated from the schema: each schema construct on small hand-written
schemas, the runtime-only marks and factory defaults of the real schema, the committed copy is current."""

from __future__ import annotations

import subprocess
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.cli import main
from pipeline.config import Experiment, experiment_schema
from pipeline.config.reference import SchemaReferenceError, experiment_reference, schema_reference
from pipeline.config.stages import RUNTIME_ONLY, RUNTIME_ONLY_KEY, STAGES
from tests.conftest import REPO_ROOT

COMMITTED_REFERENCE = REPO_ROOT / "docs" / "experiment-reference.md"
COLUMNS = ("field", "type", "default", "constraints", "description")


def parse(markdown: str) -> list[dict[str, str]]:
    """Every table row as {heading, field, type, default, constraints, description} (cells unescaped)."""
    rows, heading = [], ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| `"):
            cells = [cell.strip().replace("\\|", "|") for cell in line.strip("|").split(" | ")]
            assert len(cells) == len(COLUMNS), line
            row = dict(zip(COLUMNS, cells))
            row["field"] = row["field"].strip("`")
            rows.append({"heading": heading, **row})
    return rows


def row(markdown: str, field: str, heading: str | None = None) -> dict[str, str]:
    found = [r for r in parse(markdown) if r["field"] == field and (heading is None or heading in r["heading"])]
    assert len(found) == 1, (field, heading, found)
    return found[0]


def document(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


# --- constructs, one small schema each ------------------------------------------------------------------


def test_scalar_types_defaults_and_required():
    text = schema_reference(
        document(
            {
                "count": {"type": "integer", "default": 3, "description": "how many"},
                "rate": {"type": "number", "default": 0.5},
                "flag": {"type": "boolean", "default": False},
                "label": {"type": "string"},
                "where": {"type": "string", "format": "path", "minLength": 1},
            },
            required=("label",),
        )
    )
    assert row(text, "count") | {"heading": ""} == {
        "heading": "",
        "field": "count",
        "type": "int",
        "default": "`3`",
        "constraints": "",
        "description": "how many",
    }
    assert (row(text, "rate")["type"], row(text, "rate")["default"]) == ("float", "`0.5`")
    assert (row(text, "flag")["type"], row(text, "flag")["default"]) == ("bool", "`false`")
    assert (row(text, "label")["type"], row(text, "label")["default"]) == ("string", "**required**")
    assert (row(text, "where")["type"], row(text, "where")["constraints"]) == ("path", "length ≥ 1")


def test_enum_and_const():
    text = schema_reference(
        document(
            {
                "mode": {"type": "string", "enum": ["fast", "small"], "default": "fast"},
                "channels": {"type": "integer", "enum": [1, 2], "default": 2},
                "family": {"type": "string", "const": "dit"},
            }
        )
    )
    assert row(text, "mode")["type"] == "`fast` | `small`"
    assert row(text, "mode")["default"] == '`"fast"`'
    assert row(text, "channels")["type"] == "`1` | `2`"
    assert row(text, "family")["type"] == "`dit` only"


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "minimum": 0, "maximum": 9}, "0 ≤ x ≤ 9"),
        ({"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.5}, "0.0 < x ≤ 1.5"),
        ({"type": "number", "minimum": 0.0, "exclusiveMaximum": 1.0}, "0.0 ≤ x < 1.0"),
        ({"type": "number", "exclusiveMinimum": 0.0}, "x > 0.0"),
        ({"type": "integer", "minimum": 1}, "x ≥ 1"),
        ({"type": "integer", "exclusiveMaximum": 8}, "x < 8"),
        ({"type": "integer", "maximum": 8, "multipleOf": 2}, "x ≤ 8; multiple of 2"),
        ({"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^a|b$"}, "1 ≤ length ≤ 9; matches `^a|b$`"),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}, "exactly 2 items"),
        ({"type": "array", "items": {"type": "string"}, "maxItems": 4, "uniqueItems": True}, "items ≤ 4; items unique"),
    ],
)
def test_bounds(schema, expected):
    assert row(schema_reference(document({"value": schema})), "value")["constraints"] == expected


def test_union_with_null_keeps_the_members_bounds():
    text = schema_reference(
        document(
            {
                "limit": {"anyOf": [{"type": "number", "minimum": 0.05}, {"type": "null"}], "default": None},
                "size": {
                    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]+MB$"}],
                    "default": 5,
                },
                "listed": {"type": ["string", "null"]},
            }
        )
    )
    assert row(text, "limit")["type"] == "float or null"
    assert row(text, "limit")["default"] == "`null`"
    assert row(text, "limit")["constraints"] == "x ≥ 0.05"
    assert row(text, "size")["type"] == "int or string"
    assert row(text, "size")["constraints"] == "int: x ≥ 1; string: matches `^[0-9]+MB$`"
    assert row(text, "listed")["type"] == "string or null"


def test_lists_tuples_and_mappings():
    text = schema_reference(
        document(
            {
                "sizes": {"type": "array", "items": {"type": "integer", "minimum": 2}, "minItems": 1, "default": [4]},
                "betas": {
                    "type": "array",
                    "prefixItems": [{"type": "number", "maximum": 1}, {"type": "number", "maximum": 1}],
                },
                "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string", "minLength": 1}]},
                "options": {
                    "type": "object",
                    "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "string"}]},
                    "default": {},
                },
                "named": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "properties": {"gain": {"type": "number"}}},
                },
            }
        )
    )
    assert row(text, "sizes")["type"] == "list of int"
    assert row(text, "sizes")["constraints"] == "items ≥ 1; each x ≥ 2"
    assert row(text, "sizes")["default"] == "`[4]`"
    assert (row(text, "betas")["type"], row(text, "betas")["constraints"]) == ("[float, float]", "each x ≤ 1")
    assert (row(text, "pair")["type"], row(text, "pair")["constraints"]) == ("[int, string]", "item 2: length ≥ 1")
    assert row(text, "options")["type"] == "mapping of string to (float or string)"
    assert row(text, "named.<key>.gain")["type"] == "float"


def test_nested_objects_and_refs_become_dotted_rows_in_their_section():
    schema = document(
        {
            "name": {"type": "string"},
            "data": {"$ref": "#/$defs/Data"},
            "extra": {"anyOf": [{"$ref": "#/$defs/Extra"}, {"type": "null"}], "default": None},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Extra"}},
        },
        required=("name",),
        **{
            "$defs": {
                "Data": {
                    "type": "object",
                    "description": "the data section",
                    "properties": {"shard": {"allOf": [{"$ref": "#/$defs/Shard"}], "description": "per shard"}},
                },
                "Shard": {"type": "object", "properties": {"max_items": {"type": "integer", "default": 10}}},
                "Extra": {"type": "object", "description": "extras", "properties": {"on": {"type": "boolean"}}},
            }
        },
    )
    text = schema_reference(schema)
    assert "## `data`" in text and "## `extra`" in text and "## `name`" not in text
    assert row(text, "data")["description"] == "the data section (fields: [`data`](#data))"
    assert row(text, "data.shard")["description"] == "per shard"
    assert row(text, "data.shard.max_items") | {"heading": "`data`"} == {
        "heading": "`data`",
        "field": "data.shard.max_items",
        "type": "int",
        "default": "`10`",
        "constraints": "",
        "description": "",
    }
    assert row(text, "extra")["type"] == "object or null"
    assert row(text, "extra.on")["type"] == "bool"
    assert row(text, "items")["type"] == "list of object"
    assert row(text, "items[].on")["heading"] == "`items`"


def test_a_broken_ref_or_an_unknown_keyword_is_an_error():
    with pytest.raises(SchemaReferenceError, match="points nowhere"):
        schema_reference(document({"data": {"$ref": "#/$defs/Missing"}}))
    with pytest.raises(SchemaReferenceError, match="same schema"):
        schema_reference(document({"data": {"$ref": "other.json#/Data"}}))
    with pytest.raises(SchemaReferenceError, match="unsupported schema keyword.*propertyNames"):
        schema_reference(document({"data": {"type": "object", "propertyNames": {"pattern": "^a"}}}))


def test_a_recursive_ref_is_listed_once():
    schema = document(
        {"tree": {"$ref": "#/$defs/Node"}},
        **{"$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}}},
    )
    text = schema_reference(schema)
    assert row(text, "tree.child")["type"] == "object (recursive: see above)"
    assert not [r for r in parse(text) if r["field"].startswith("tree.child.")]


def _conditional(key: str, members: dict[str, str]) -> dict[str, Any]:
    """A union written the way `schema._conditional_unions` writes one."""
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"enum": list(members)}},
        "allOf": [
            {"if": {"properties": {key: {"const": name}}, "required": [key]}, "then": {"$ref": reference}}
            for name, reference in members.items()
        ],
    }


UNION_DEFS = {
    "Flac": {
        "type": "object",
        "description": "lossless",
        "required": ["type"],
        "properties": {
            "type": {"const": "flac", "type": "string"},
            "bits": {"enum": [16, 24], "type": "integer", "default": 16},
        },
    },
    "Wav": {
        "type": "object",
        "required": ["type", "bits"],
        "properties": {"type": {"const": "wav", "type": "string"}, "bits": {"type": "integer", "minimum": 8}},
    },
    "Plain": {"type": "object", "required": ["type"], "properties": {"type": {"const": "plain", "type": "string"}}},
}


def test_a_discriminated_union_gets_one_table_per_type():
    codec = {**_conditional("type", {"flac": "#/$defs/Flac", "wav": "#/$defs/Wav", "plain": "#/$defs/Plain"})}
    schema = document(
        {"data": {"type": "object", "properties": {"codec": {**codec, "default": {"type": "flac"}}}}},
        **{"$defs": UNION_DEFS},
    )
    text = schema_reference(schema)
    assert row(text, "data.codec")["type"] == "object by `type`: `flac` | `wav` | `plain`"
    assert row(text, "data.codec")["default"] == '`{"type": "flac"}`'
    assert "### `data.codec`: one table per `type`" in text
    flac = row(text, "data.codec.bits", "with `type: flac`")
    wav = row(text, "data.codec.bits", "with `type: wav`")
    assert (flac["type"], flac["default"]) == ("`16` | `24`", "`16`")
    assert (wav["type"], wav["default"], wav["constraints"]) == ("int", "**required**", "x ≥ 8")
    assert "lossless" in text.split("with `type: flac`")[1].split("####")[0]
    assert "with `type: plain`\n\nNo fields besides `type`." in text
    assert not [r for r in parse(text) if r["field"] == "data.codec.type"]


def test_a_list_of_a_discriminated_union_and_a_nested_union():
    conditioner = _conditional("type", {"flac": "#/$defs/Flac", "outer": "#/$defs/Outer"})
    defs = {
        **UNION_DEFS,
        "Outer": {
            "type": "object",
            "properties": {
                "type": {"const": "outer"},
                "inner": _conditional("type", {"wav": "#/$defs/Wav"}),
            },
        },
    }
    schema = document({"things": {"type": "array", "items": conditioner, "default": []}}, **{"$defs": defs})
    text = schema_reference(schema)
    assert row(text, "things")["type"] == "list of (object by `type`: `flac` | `outer`)"
    assert row(text, "things[].bits", "with `type: flac`")["type"] == "`16` | `24`"
    assert "##### `things[].inner`: one table per `type`" in text
    assert row(text, "things[].inner.bits", "`things[].inner` with `type: wav`")["default"] == "**required**"


def test_an_object_default_is_shown_only_when_it_is_not_its_fields_defaults():
    stage = {"type": "object", "properties": {"cpus": {"type": "integer", "default": 1}}}
    schema = document(
        {
            "plain": {**stage, "default": {"cpus": 1}},
            "bigger": {**stage, "default": {"cpus": 8}},
            "listed": {
                "type": "object",
                "properties": {"ext": {"type": "array", "items": {"type": "string"}, "default": ["b", "a"]}},
                "default": {"ext": ["a", "b"]},  # a validator sorted it: the same default
            },
        }
    )
    text = schema_reference(schema)
    assert row(text, "plain")["default"] == "its fields' defaults"
    assert row(text, "bigger")["default"] == '`{"cpus": 8}`'
    assert row(text, "bigger.cpus")["default"] == "`1`"
    assert row(text, "listed")["default"] == "its fields' defaults"


def test_runtime_only_fields_are_marked_and_so_is_everything_inside_one():
    schema = document(
        {
            "workers": {"type": "integer", "description": "processes", RUNTIME_ONLY_KEY: True},
            "device": {"enum": ["cpu"], RUNTIME_ONLY_KEY: True},
            "logging": {"type": "object", "properties": {"every": {"type": "integer"}}, RUNTIME_ONLY_KEY: True},
            "steps": {"type": "integer", "description": "steps"},
        }
    )
    text = schema_reference(schema)
    assert row(text, "workers")["description"] == "*runtime-only*. processes"
    assert row(text, "device")["description"] == "*runtime-only*"
    assert row(text, "logging.every")["description"] == "*runtime-only*"
    assert row(text, "steps")["description"] == "steps"


def test_cells_stay_one_line_with_pipes_escaped():
    text = schema_reference(document({"v": {"type": "string", "description": "a | b\nc", "default": "x|y"}}))
    line = next(line for line in text.splitlines() if line.startswith("| `v`"))
    assert line == '| `v` | string | `"x\\|y"` |  | a \\| b c |'


def test_output_is_deterministic_and_follows_the_schema_order():
    schema = document({"b": {"type": "integer"}, "a": {"type": "integer"}})
    assert schema_reference(schema) == schema_reference(schema)
    assert [r["field"] for r in parse(schema_reference(schema))] == ["b", "a"]


# --- the real experiment ----------------------------------------------------------------------------------


def _runtime_only_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every RUNTIME_ONLY field, found by walking the models (as the hasher does)."""
    found = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if RUNTIME_ONLY in info.metadata:
            found.add(path)
        for inner, suffix in _models_in(info.annotation):
            found |= _runtime_only_paths(inner, f"{path}{suffix}.")
    return found


def _models_in(annotation: Any, suffix: str = "") -> list[tuple[type[BaseModel], str]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, suffix)]
    origin = typing.get_origin(annotation)
    inner_suffix = suffix + "[]" if origin in (list, tuple) else suffix
    found = []
    if origin in (typing.Union, types.UnionType, typing.Annotated, list, tuple):
        for argument in typing.get_args(annotation):
            found += _models_in(argument, inner_suffix)
    return found


@pytest.fixture(scope="module")
def reference() -> str:
    return experiment_reference()


def test_committed_reference_is_current(reference):
    assert COMMITTED_REFERENCE.read_text(encoding="utf-8") == reference, "run `make schema` and commit the result"


def test_every_runtime_only_field_is_marked_in_the_schema_and_the_reference(reference):
    expected = _runtime_only_paths(Experiment)
    assert "train.data.num_workers" in expected and "sample.device" in expected
    marked = {r["field"] for r in parse(reference) if r["description"].startswith("*runtime-only*")}
    assert marked == expected


def test_factory_defaults_are_in_the_schema_and_the_reference(reference):
    resources = experiment_schema()["$defs"]["ResourcesConfig"]["properties"]
    for stage in STAGES:
        default = resources[stage.name]["default"]
        assert {key: default[key] for key in stage.resources} == stage.resources, stage.name
    # Each stage's fields show that stage's own defaults (resources.train is not the generic StageResources).
    assert row(reference, "resources.train.cpus")["default"] == "`8`"
    assert row(reference, "resources.train.gpus")["default"] == "`1`"
    assert row(reference, "resources.plan.gpus")["default"] == "`0`"
    assert row(reference, "data.codec")["default"] == '`{"type": "flac"}`'
    assert row(reference, "train.optimizer.options")["default"] == '`{"betas": [0.9, 0.999], "weight_decay": 0.001}`'


def test_every_section_and_component_has_its_table(reference):
    sections = [line for line in reference.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Top level",
        *[f"## `{name}`" for name in ("paths", "data", "autoencoder", "pre_encode", "train", "sample", "resources")],
    ]
    for kind in ("fsq", "identity", "rvq", "tanh", "vae"):
        assert f"#### `autoencoder.model.bottleneck` with `type: {kind}`" in reference
    assert row(reference, "data.codec.float", "with `type: wav`")["type"] == "bool"
    # Every model type with conditioners (diffusion, lm) has its own conditioner tables.
    labels = [
        r
        for r in parse(reference)
        if r["field"] == "train.model.conditioners[].values" and "with `type: label`" in r["heading"]
    ]
    assert len(labels) == 2 and all(r["default"] == "**required**" for r in labels)
    assert row(reference, "autoencoder.training.kl_weight")["default"] == "**required**"


def test_cli_writes_the_reference(tmp_path, reference):
    out = tmp_path / "reference.md"
    assert main(["schema", "--markdown", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == reference


def test_make_schema_writes_both_files():
    dry_run = subprocess.run(["make", "-n", "schema"], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert "pipeline schema -o schema/experiment.schema.json" in dry_run.stdout
    assert "pipeline schema --markdown -o docs/experiment-reference.md" in dry_run.stdout
