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
