"""Turn pydantic's ValidationError into plain-worded problems with clean dotted paths and origins."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Tag, ValidationError

from pipeline.config.errors import ConfigProblem, did_you_mean, dotted
from pipeline.config.loader import Document


def problems_from_validation_error(
    error: ValidationError, root: type[BaseModel], document: Document, skip_missing: bool = False
) -> list[ConfigProblem]:
    """`skip_missing`: a file of the chain could not be read, so "required key is missing" would mislead."""
    problems = []
    for item in error.errors(include_url=False):
        if (skip_missing and item["type"] == "missing") or _echo_of_item_errors(item):
            continue
        loc, parent = _clean_loc(root, item["loc"])
        path = dotted(loc)
        problems.append(ConfigProblem(path, _plain_message(item, parent, loc), document.origin_of(loc)))
    return problems


def _echo_of_item_errors(item: dict[str, Any]) -> bool:
    """Pydantic adds "should have at least 1 item after validation, not 0" to a long enough list whose
    items failed: those item errors say it all."""
    given, minimum = item.get("input"), item.get("ctx", {}).get("min_length")
    return (
        item["type"] == "too_short"
        and isinstance(given, (list, tuple))
        and isinstance(minimum, int)
        and len(given) >= minimum
    )


def _clean_loc(root: type[BaseModel], raw_loc: Iterable[Any]) -> tuple[tuple[Any, ...], Any]:
    """Drop union tags pydantic inserts into locations; also return the model holding the last key."""
    annotation: Any = root
    parent: Any = None
    clean: list[Any] = []
    for part in raw_loc:
        annotation = _unwrap(annotation)
        members = _tagged_members(annotation)
        if members and part in members:
            annotation = members[part]  # `part` is the union tag, not a key of the document
            continue
        parent = annotation
        clean.append(part)
        annotation = _step(annotation, part)
    return tuple(clean), parent


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; Optional[X] -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _tagged_members(annotation: Any) -> dict[str, Any]:
    """For a union of models with a Literal `type`, tag -> model."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    members = {}
    for arg in typing.get_args(annotation):
        tag = _tag_of(arg)
        if tag is not None:  # a member of a callable-discriminator union: Annotated[Model, Tag(name)]
            members[tag] = typing.get_args(arg)[0]
        elif isinstance(arg, type) and issubclass(arg, BaseModel) and "type" in arg.model_fields:
            for tag in typing.get_args(arg.model_fields["type"].annotation):
                members[tag] = arg
    return members


def _tag_of(member: Any) -> str | None:
    if typing.get_origin(member) is not typing.Annotated:
        return None
    return next((meta.tag for meta in typing.get_args(member)[1:] if isinstance(meta, Tag)), None)


def _step(annotation: Any, part: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field is not None else None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _plain_message(item: dict[str, Any], parent: Any, loc: tuple[Any, ...]) -> str:
    kind = item["type"]
    ctx = item.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _field_names(parent)
        hint = did_you_mean(loc[-1], allowed) if loc else ""
        return f"unknown key{hint}; allowed here: {', '.join(allowed)}" if allowed else f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing" + _described(parent, loc)
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; choose one of: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a '{ctx.get('discriminator', 'type').strip(chr(39))}' key naming the component"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}{_described(parent, loc)}, got {_show(item.get('input'))}"
    bound = _BOUNDS.get(kind)
    if bound is not None:
        return f"must be {bound[0]} {ctx.get(bound[1])}, got {_show(item.get('input'))}"
    message = str(item["msg"])
    for prefix, replacement in (("Value error, ", ""), ("Input should be", "expected"), ("Assertion failed, ", "")):
        if message.startswith(prefix):
            message = replacement + message[len(prefix) :]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "expected a mapping of keys to values"
    if kind == "path_type":
        message = "expected a file or folder path"
    if "input" not in item or kind in ("value_error", "cross_field") or ", got " in message:
        return message
    return f"{message}, got {_show(item['input'])}"


_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _field_names(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _described(model: Any, loc: tuple[Any, ...]) -> str:
    if not loc or not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    field = model.model_fields.get(str(loc[-1]))
    return f" ({field.description})" if field is not None and field.description else ""


def _show(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__}"
    if isinstance(value, bool):
        return "true" if value else "false"  # as the YAML says it
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"  # repr refuses past 4300 digits
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
