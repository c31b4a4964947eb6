"""Base classes shared by every config model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


class StrictModel(BaseModel):
    """Unknown keys are errors and a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


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
                InitErrorDetails(type=PydanticCustomError("cross_field", "{message}", {"message": message}), loc=loc, input=None)
                for loc, message in problems
            ],
        )
