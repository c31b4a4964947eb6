"""JSON Schema of the experiment, for editors (yaml-language-server) and `snakemake.utils.validate`."""

from __future__ import annotations

from typing import Any

from pipeline.config.experiment import Experiment

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def experiment_schema() -> dict[str, Any]:
    """The schema of an experiment file; `extends` is allowed because files are validated before merging."""
    schema = Experiment.model_json_schema(mode="validation")
    schema["properties"]["extends"] = {
        "description": "base experiment file(s), relative to this file; merged deeply, this file wins",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    return {"$schema": SCHEMA_DIALECT, **schema}
