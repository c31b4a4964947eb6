"""`pipeline schema`: validates the demo with jsonschema and snakemake.utils.validate; committed copy is current."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as snakemake_validate

from pipeline.config import experiment_schema, load_experiment, to_plain
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT

COMMITTED_SCHEMA = REPO_ROOT / "schema" / "experiment.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    return experiment_schema()


@pytest.fixture(scope="module")
def resolved_demo() -> dict:
    return to_plain(load_experiment(DEMO_EXPERIMENT, base_dir=REPO_ROOT))


def test_schema_declares_its_dialect(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_committed_schema_is_current(schema):
    assert json.loads(COMMITTED_SCHEMA.read_text()) == schema, "run `make schema` and commit the result"


def test_jsonschema_accepts_the_demo_resolved_and_as_written(schema, resolved_demo):
    jsonschema.validate(resolved_demo, schema)
    jsonschema.validate(yaml.safe_load(DEMO_EXPERIMENT.read_text()), schema)


def test_snakemake_validate_accepts_the_demo(tmp_path, resolved_demo):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(experiment_schema()))
    snakemake_validate(copy.deepcopy(resolved_demo), str(schema_file))
    snakemake_validate(yaml.safe_load(DEMO_EXPERIMENT.read_text()), str(schema_file), set_default=False)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(seed=-1),
        lambda d: d.update(colour="blue"),
        lambda d: d["data"].update(sample_rate="fast"),
        lambda d: d["data"].update(codec={"type": "mp4"}),
        lambda d: d["data"].update(codec={"bits": 16}),
        lambda d: d["data"]["shard"].update(max_bytes="3 parsecs"),
    ],
    ids=["negative-seed", "unknown-key", "wrong-type", "unknown-component", "component-without-type", "bad-size"],
)
def test_schema_rejects_what_validation_rejects(tmp_path, schema, resolved_demo, mutate):
    broken = copy.deepcopy(resolved_demo)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    with pytest.raises(WorkflowError):
        snakemake_validate(broken, str(schema_file))


# --- schema and validation agree (issue 10) ---------------------------------------------------------------

from pydantic import ValidationError  # noqa: E402

from pipeline.config import Experiment  # noqa: E402
from pipeline.config.sat import SatImportError, import_sat_config  # noqa: E402
from tests.conftest import SAT_CONFIGS, deep_merge  # noqa: E402

REQUIREMENT_ERRORS = {"missing", "union_tag_not_found"}
VARIANTS = {
    "demo": {},
    "fsq": {
        "autoencoder": {"model": {"bottleneck": {"type": "fsq", "levels": [4, 4]}, "encoder": {"latent_dim": 16}}},
        "train": None,  # a diffusion model needs continuous latents
    },
    "rvq": {
        "autoencoder": {"model": {"bottleneck": {"type": "rvq", "codebook_size": 64}, "encoder": {"latent_dim": 16}}},
        "train": None,
    },
    "tanh": {"autoencoder": {"model": {"bottleneck": {"type": "tanh", "scale": 2.0}, "encoder": {"latent_dim": 16}}}},
    "identity": {"autoencoder": {"model": {"bottleneck": {"type": "identity"}, "encoder": {"latent_dim": 16}}}},
    "wav-codec": {"data": {"codec": None}},  # replaced below: a merge would keep flac's compression_level
    "no-autoencoder": {"autoencoder": None, "train": None},
    "split-items": {"data": {"max_item_seconds": 4, "segment_overlap_seconds": 1.5, "shard": {"max_bytes": "1.5MiB"}}},
    "pretrained": {"autoencoder": {"checkpoint": "/models/vae.safetensors", "training": None}},
}


def _variant(name: str) -> dict:
    """The resolved demo with the variant's changes (a None removes the key)."""
    merged = deep_merge(to_plain(load_experiment(DEMO_EXPERIMENT, base_dir=REPO_ROOT)), VARIANTS[name])
    if name == "wav-codec":
        merged["data"]["codec"] = {"type": "wav", "bits": 32, "float": True}
    return _drop_nones(merged)


def _drop_nones(node):
    if isinstance(node, dict):
        return {key: _drop_nones(value) for key, value in node.items() if value is not None}
    return node


def _validation_errors(document: dict) -> list[dict] | None:
    """None when the experiment validates, else pydantic's errors."""
    try:
        Experiment.model_validate(copy.deepcopy(document), context={"base_dir": REPO_ROOT})
    except ValidationError as error:
        return error.errors()
    return None


def _key_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _key_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _key_paths(value, (*prefix, index))


def _without(document: dict, path: tuple) -> dict:
    copied = copy.deepcopy(document)
    target = copied
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return copied


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_valid_variant_validates_against_the_schema(schema, name):
    document = _variant(name)
    assert _validation_errors(document) is None
    jsonschema.validate(document, schema)


def test_sat_imports_validate_against_the_schema(schema):
    imported = 0
    for config in sorted(SAT_CONFIGS.glob("*.json")):
        for checkpoint in (None, "/models/vae.ckpt"):
            try:
                sections, _ = import_sat_config(config, checkpoint=checkpoint)
            except SatImportError:  # not an autoencoder we import; test_autoencoder_section covers those
                continue
            written = {"name": "x", "paths": {"audio_dir": "/a"}, **sections}
            if _validation_errors(written) is not None:
                continue  # a pretransform without training settings needs a checkpoint
            jsonschema.validate(written, schema)
            jsonschema.validate(to_plain(Experiment.model_validate(written)), schema)
            imported += 1
    assert imported >= 2


@pytest.mark.parametrize("name", ["demo", "fsq", "wav-codec", "pretrained"])
def test_schema_requirements_match_validation(schema, name):
    """Drop each key in turn: what validation accepts, the schema accepts; what validation rejects because
    a key is required (a missing key, or a component without its `type`), the schema rejects too."""
    document = _variant(name)
    validator = jsonschema.Draft202012Validator(schema)
    for path in _key_paths(document):
        dropped = _without(document, path)
        errors = _validation_errors(dropped)
        schema_accepts = validator.is_valid(dropped)
        if errors is None:
            assert schema_accepts, f"validation accepts {path} left out, the schema does not"
        elif {error["type"] for error in errors} <= REQUIREMENT_ERRORS:
            assert not schema_accepts, f"validation requires {path}, the schema does not: {errors}"


def test_component_type_is_required_by_both(schema, resolved_demo):
    for part in ("encoder", "decoder", "bottleneck"):
        dropped = copy.deepcopy(resolved_demo)
        del dropped["autoencoder"]["model"][part]["type"]
        errors = _validation_errors(dropped)
        assert errors and errors[0]["type"] == "union_tag_not_found", (part, errors)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(dropped, schema)
