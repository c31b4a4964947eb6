"""Stage hashes: a stable digest of the config each stage depends on, chained with its upstream stage.

Hashes are computed on the validated model dumped with every default written out, as canonical
JSON (sorted keys), so key order and explicitly written defaults never change them. Which fields
each stage covers is in `pipeline.config.stages.STAGES`; fields marked `RUNTIME_ONLY` where they
are defined are left out (found by walking the model's fields, so renaming one keeps its mark).
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from typing import Any

from pydantic import BaseModel

from pipeline.config.experiment import Experiment
from pipeline.config.stages import HASHED_STAGES, RUNTIME_ONLY

STAGE_INPUTS = HASHED_STAGES  # stage name -> Stage (upstream, fields, version), for the stages with a hash


def hashed_dump(model: BaseModel) -> dict[str, Any]:
    """`model` as plain JSON data, every default written out, without its RUNTIME_ONLY fields (at any depth)."""
    plain = model.model_dump(mode="json")
    _drop_runtime_only(model, plain)
    return plain


def _drop_runtime_only(value: Any, plain: Any) -> None:
    if isinstance(value, BaseModel) and isinstance(plain, dict):
        for name, info in type(value).model_fields.items():
            if RUNTIME_ONLY in info.metadata:
                plain.pop(name, None)
            else:
                _drop_runtime_only(getattr(value, name), plain.get(name))
    elif isinstance(value, (list, tuple)) and isinstance(plain, list):
        for item, plain_item in zip(value, plain):
            _drop_runtime_only(item, plain_item)
    elif isinstance(value, dict) and isinstance(plain, dict):
        for item, plain_item in zip(value.values(), plain.values()):
            _drop_runtime_only(item, plain_item)


def _without(plain: dict[str, Any], ignoring: tuple[str, ...]) -> dict[str, Any]:
    for dotted_name in ignoring:
        _check_field_exists(dotted_name)
        *parents, leaf = dotted_name.split(".")
        section = _field(plain, ".".join(parents)) if parents else plain
        if isinstance(section, dict):
            section.pop(leaf, None)
    return plain


def _check_field_exists(dotted_name: str) -> None:
    """A dotted name that no longer names a field (renamed, moved) is an error, never silently ignored."""
    model: Any = Experiment
    for part in dotted_name.split("."):
        model = _model_class(model)
        if model is None or part not in model.model_fields:
            raise KeyError(f"{dotted_name!r} names no field of the experiment (at {part!r})")
        model = model.model_fields[part].annotation


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `annotation` (`X`, `X | None`, `Annotated[X, ...]`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for member in typing.get_args(annotation):
            found = _model_class(member)
            if found is not None:
                return found
    return None


def _field(plain: dict[str, Any], dotted_name: str) -> Any:
    """A (possibly not yet existing) section of the dumped experiment; absent sections are null."""
    value: Any = plain
    for part in dotted_name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def canonical_digest(data: Any) -> str:
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def stage_hash(experiment: Experiment, stage: str, ignoring: tuple[str, ...] = ()) -> str:
    """Hex digest (16 chars) of `stage`'s config subset and its upstream chain; the dotted fields in
    `ignoring` are left out (a training run's identity ignores its step count: raising it continues)."""
    if stage not in STAGE_INPUTS:
        raise KeyError(f"unknown stage {stage!r}; stages with hashes: {sorted(STAGE_INPUTS)}")
    return _chained_hash(_without(hashed_dump(experiment), ignoring), stage)


def _chained_hash(plain: dict[str, Any], stage: str) -> str:
    inputs = STAGE_INPUTS[stage]
    payload = {
        "stage": stage,
        "version": inputs.version,
        "upstream": _chained_hash(plain, inputs.upstream) if inputs.upstream else None,
        "fields": {name: _field(plain, name) for name in inputs.fields},
    }
    return canonical_digest(payload)[:16]


def stage_hashes(experiment: Experiment) -> dict[str, str]:
    plain = hashed_dump(experiment)
    return {stage: _chained_hash(plain, stage) for stage in STAGE_INPUTS}
