"""Base classes shared by every config model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

# Keys of a pydantic-core schema that hold a schema or a list of them, and keys that hold a dict of them.
_SUBSCHEMA_KEYS = ("schema", "items_schema", "keys_schema", "values_schema", "definitions", "schemas", "choices")
_SUBSCHEMA_DICT_KEYS = ("fields", "choices")


def strict_scalars(schema: Any) -> Any:
    """Pydantic's lax mode reads `True` as 1, `"3"` as 3 and `1` as true. YAML and JSON already type
    scalars, so a field takes only its own kind: numbers (int, float and numeric Literal fields) refuse
    booleans and strings, booleans and strings are strict. Applied to the whole core schema of every
    config model, so no field needs its own annotation (and JSON Schema, which never lets a boolean
    be a number, agrees)."""
    if isinstance(schema, list):
        return [strict_scalars(item) for item in schema]
    if isinstance(schema, tuple):
        return tuple(strict_scalars(item) for item in schema)
    if not isinstance(schema, dict):
        return schema
    out = {key: _walk_key(key, value) for key, value in schema.items()}
    kind = out.get("type")
    if kind in ("bool", "str"):
        return {**out, "strict": True}
    if kind in ("int", "float") or (kind == "literal" and _numeric_literal(out["expected"])):
        return core_schema.no_info_before_validator_function(_refuse_non_numbers(_expected(out)), out)
    return out


def _expected(schema: dict[str, Any]) -> str:
    if schema["type"] == "literal":
        return " or ".join(str(value) for value in schema["expected"])
    return "an integer" if schema["type"] == "int" else "a number"


def _walk_key(key: str, value: Any) -> Any:
    if key in _SUBSCHEMA_DICT_KEYS and isinstance(value, dict):
        return {name: strict_scalars(item) for name, item in value.items()}
    return strict_scalars(value) if key in _SUBSCHEMA_KEYS else value


def _numeric_literal(expected: list[Any]) -> bool:
    return any(isinstance(value, (int, float)) and not isinstance(value, bool) for value in expected)


def _refuse_non_numbers(expected: str) -> Callable[[Any], Any]:
    def refuse(value: Any) -> Any:
        if isinstance(value, bool):
            shown = "true" if value else "false"
            raise PydanticCustomError(
                "bool_not_number",
                "expected {expected}, got the boolean {value}",
                {"expected": expected, "value": shown},
            )
        if isinstance(value, str):
            shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
            raise PydanticCustomError(
                "str_not_number", "expected {expected}, got the string {value}", {"expected": expected, "value": shown}
            )
        return value

    return refuse


class StrictModel(BaseModel):
    """Unknown keys are errors, a loaded config never changes, and every field takes only its own kind
    of scalar (see `strict_scalars`): `channels: true` is not mono, `store_scale: 1` is not true."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[BaseModel], handler: GetCoreSchemaHandler) -> CoreSchema:
        return strict_scalars(handler(source))


def _require_type(schema: dict[str, Any]) -> None:
    """In a file, `type` picks the component, so the JSON Schema requires it (as validation does) and
    gives it no default (snakemake's validate would fill it in and accept what loading rejects)."""
    schema.get("properties", {}).get("type", {}).pop("default", None)
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")


class ComponentConfig(StrictModel):
    """Config of a registered component; subclasses narrow `type` to `Literal["<name>"]`."""

    model_config = ConfigDict(json_schema_extra=_require_type)

    type: str


def check_fields(model: BaseModel, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
    """Raise every cross-field problem at once, each at its own field path (relative to `model`)."""
    if problems:
        raise ValidationError.from_exception_data(
            type(model).__name__,
            [
                InitErrorDetails(
                    type=PydanticCustomError("cross_field", "{message}", {"message": message}), loc=loc, input=None
                )
                for loc, message in problems
            ],
        )
