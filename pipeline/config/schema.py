"""JSON Schema of the experiment, for editors (yaml-language-server) and `snakemake.utils.validate`."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from pipeline.config.experiment import Experiment

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def experiment_schema() -> dict[str, Any]:
    """The schema of an experiment file; `extends` is allowed because files are validated before merging."""
    schema = _conditional_unions(
        Experiment.model_json_schema(mode="validation", schema_generator=_FactoryDefaultsSchema)
    )
    schema["properties"]["extends"] = {
        "description": "base experiment file(s), relative to this file; merged deeply, this file wins",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    return {"$schema": SCHEMA_DIALECT, **schema}


class _FactoryDefaultsSchema(GenerateJsonSchema):
    """Fields with a `default_factory` show the value it makes (`resources.train` its stage's resources,
    `data.codec` `{type: flac}`); pydantic leaves their `default` out otherwise."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        return factory()  # type: ignore[call-arg]


def _conditional_unions(node: Any) -> Any:
    """Discriminated unions as `type` enum + if/then per member instead of `oneOf`.

    `snakemake.utils.validate(set_default=True)` fills defaults while it tries each `oneOf` branch, into
    the one instance: a `label` conditioner would collect a `number` conditioner's min_val/max_val and
    then match neither. An `if` on the `type` constant picks the one branch before any default is set."""
    if isinstance(node, list):
        return [_conditional_unions(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _conditional_unions(value) for key, value in node.items()}
    discriminator = node.get("discriminator")
    if not (isinstance(discriminator, dict) and "oneOf" in node and "mapping" in discriminator):
        return node
    key, mapping = discriminator["propertyName"], discriminator["mapping"]
    rest = {name: value for name, value in node.items() if name not in ("discriminator", "oneOf")}
    return {
        **rest,
        "type": "object",
        "required": [key],
        "properties": {key: {"enum": list(mapping)}},
        "allOf": [
            {"if": {"properties": {key: {"const": name}}, "required": [key]}, "then": {"$ref": reference}}
            for name, reference in mapping.items()
        ],
    }
