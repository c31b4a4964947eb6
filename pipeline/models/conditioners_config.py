"""Configs of the conditioners (torch-free; the modules are in `conditioners.py`).

A conditioner turns one metadata field of each item into conditioning tokens of width `cond_dim`
(the diffusion model's `cond_dim`, stable-audio-tools' `conditioning.cond_dim`). `id` names it
(the model's `cross_attention_cond_ids` / `global_cond_ids` and its state-dict key
`conditioner.conditioners.<id>`); `field` is the metadata field it reads, `id` by default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register_config

MODULE = "pipeline.models.conditioners"
# A state-dict key segment: no dots (they separate keys), nothing that is not an identifier.
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_LABELS = 1_000_000


class ConditionerConfig(ComponentConfig):
    """What every conditioner has: its id and the metadata field it reads."""

    id: str = Field(pattern=IDENTIFIER, description="the conditioner's name (the model's cond ids, state-dict key)")
    field: str | None = Field(
        None, min_length=1, max_length=256, description="metadata field it reads; default: the id"
    )

    @property
    def source_field(self) -> str:
        return self.id if self.field is None else self.field


@register_config("conditioner", "number", component=f"{MODULE}:NumberConditioner")
class NumberConditionerConfig(ConditionerConfig):
    """A number (seconds_start, seconds_total), clamped to [min_val, max_val] and scaled to [0, 1],
    embedded with learned Fourier features (stable-audio-tools' NumberConditioner): one token."""

    type: Literal["number"] = "number"
    min_val: float = Field(0.0, ge=-1e9, le=1e9, description="values below are clamped to it; maps to 0")
    max_val: float = Field(512.0, ge=-1e9, le=1e9, description="values above are clamped to it; maps to 1")

    @model_validator(mode="after")
    def _check_range(self) -> NumberConditionerConfig:
        problems = []
        if self.max_val <= self.min_val:
            problems.append((("max_val",), f"must be greater than min_val ({self.min_val}), got {self.max_val}"))
        check_fields(self, problems)
        return self


@register_config("conditioner", "label", component=f"{MODULE}:LabelConditioner")
class LabelConditionerConfig(ConditionerConfig):
    """One of a fixed list of strings (a genre, a source), embedded by a lookup table: one token.
    Row 0 is 'unknown': a value not in the list, and a missing one, map to it."""

    type: Literal["label"] = "label"
    values: tuple[str, ...] = Field(
        min_length=1, max_length=MAX_LABELS, description="the known labels; row i + 1 embeds values[i]"
    )

    @model_validator(mode="after")
    def _check_unique(self) -> LabelConditionerConfig:
        seen: set[str] = set()
        repeated = sorted({value for value in self.values if value in seen or seen.add(value)})
        problems = []
        if repeated:
            shown = ", ".join(repr(value) for value in repeated[:5]) + (" ..." if len(repeated) > 5 else "")
            problems.append((("values",), f"must be unique; repeated: {shown}"))
        check_fields(self, problems)
        return self


Problems = list[tuple[tuple[str | int, ...], str]]


class UsesConditioners:
    """Mixed into a model config that has a `conditioners` field (diffusion, LM): the metadata fields
    they read. No fields of its own, so the config's fields and their order stay its own."""

    @property
    def conditioning_fields(self) -> tuple[str, ...]:
        """The metadata fields the conditioners read, each once, in conditioner order."""
        return tuple(dict.fromkeys(conditioner.source_field for conditioner in self.conditioners))


def cond_id_problems(
    conditioners: Sequence[ConditionerConfig], cond_dim: int, id_lists: Mapping[str, Sequence[str]]
) -> Problems:
    """A model's conditioners against the id lists that use them (`cross_attention_cond_ids`, ...):
    every id named once and used, every listed id a conditioner, listed once; cond_dim set when any is.
    Paths are relative to the model's config."""
    problems: Problems = []
    ids = [conditioner.id for conditioner in conditioners]
    used = {name for listed in id_lists.values() for name in listed}
    for index, name in enumerate(ids):
        if name in ids[:index]:
            problems.append((("conditioners", index, "id"), f"'{name}' names two conditioners"))
        elif name not in used:
            message = f"'{name}' is used by neither {' nor '.join(id_lists)}"
            problems.append((("conditioners", index, "id"), message))
    for field, listed in id_lists.items():
        for index, name in enumerate(listed):
            if name not in ids:
                known = ", ".join(ids) if ids else "none"
                problems.append(((field, index), f"'{name}' names no conditioner (conditioners: {known})"))
            elif name in listed[:index]:
                problems.append(((field, index), f"'{name}' is listed twice"))
    if conditioners and cond_dim == 0:
        problems.append((("cond_dim",), "must be positive: it is the width of the conditioners' tokens"))
    return problems


def sample_conditioning_problems(conditioners: Sequence[ConditionerConfig], sample: Any) -> Problems:
    """`sample.conditioning` names only conditioners of the model (paths relative to `sample`)."""
    ids = [conditioner.id for conditioner in conditioners]
    known = ", ".join(ids) if ids else "none"
    return [
        (("conditioning", name), f"names no conditioner of train.model (conditioners: {known})")
        for name in sample.conditioning
        if name not in ids
    ]
