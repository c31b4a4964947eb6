"""Conditioners: one metadata field per item -> `(tokens (B, S, cond_dim), mask (B, S) bool)`.

Every conditioner is built as `Conditioner(config, output_dim)` and called as `forward(values)` with
one value per item (`None` where the item lacks the field); its outputs are on the module's device.
A token whose mask is False is padding (never attended to). What a missing value gives is each
conditioner's null:

- `number`: a zero token (the null that classifier-free guidance uses), unmasked, as SAT's CFG keeps
  masks: a sample must keep at least one real token, or cross-attention over it has no keys;
- `label`: row 0 of the table, the learned 'unknown' token (unknown labels map there too);
- a text conditioner (t5, to come) gives S tokens, zero where masked (padding), as SAT's T5Conditioner.

Module names follow stable-audio-tools (`NumberConditioner.embedder.embedding.{0.weights,1.weight,1.bias}`,
`ListConditioner.embedder.weight`), so its checkpoints' conditioner keys load unchanged."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pipeline.config.registry import build, register
from pipeline.models.conditioners_config import (
    ConditionerConfig,
    LabelConditionerConfig,
    NumberConditionerConfig,
)

NUMBER_FEATURES = 256  # stable-audio-tools' NumberEmbedder(dim=256): 128 learned frequencies, sin and cos


class Conditioner(nn.Module):
    def __init__(self, config: ConditionerConfig, output_dim: int):
        super().__init__()
        if output_dim < 1:
            raise ValueError(f"conditioner '{config.id}': output_dim must be positive, got {output_dim}")
        self.config = config
        self.output_dim = output_dim

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def forward(self, values: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class LearnedFourierFeatures(nn.Module):
    """x (B,) -> (B, dim + 1): [x, sin(2 pi w x), cos(2 pi w x)] with dim/2 learned frequencies w
    (stable-audio-tools' LearnedPositionalEmbedding; the parameter is named `weights` as there)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier feature width must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        freqs = x * self.weights[None, :] * 2 * math.pi
        return torch.cat((x, freqs.sin(), freqs.cos()), dim=-1)


class NumberEmbedder(nn.Module):
    """x (B,) in [0, 1] -> (B, features): Fourier features then a linear layer (stable-audio-tools' NumberEmbedder)."""

    def __init__(self, features: int, dim: int = NUMBER_FEATURES):
        super().__init__()
        self.embedding = nn.Sequential(LearnedFourierFeatures(dim), nn.Linear(dim + 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


@register("conditioner", "number", config=NumberConditionerConfig)
class NumberConditioner(Conditioner):
    def __init__(self, config: NumberConditionerConfig, output_dim: int):
        super().__init__(config, output_dim)
        self.embedder = NumberEmbedder(output_dim)

    def normalise(self, values: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(values clamped and scaled to [0, 1], float32; present (B,) bool): a missing value reads 0."""
        present = [value is not None for value in values]
        numbers = [float(value) if value is not None else 0.0 for value in values]
        bad = [number for number in numbers if not math.isfinite(number)]
        if bad:
            raise ValueError(f"conditioner '{self.config.id}': values must be finite numbers, got {bad[0]}")
        low, high = self.config.min_val, self.config.max_val
        x = torch.tensor(numbers, dtype=torch.float32, device=self.device).clamp(low, high)
        return (x - low) / (high - low), torch.tensor(present, dtype=torch.bool, device=self.device)

    def forward(self, values: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x, present = self.normalise(values)
        tokens = self.embedder(x.to(self.embedder.embedding[1].weight.dtype))
        tokens = torch.where(present[:, None], tokens, torch.zeros_like(tokens))[:, None, :]
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


@register("conditioner", "label", config=LabelConditionerConfig)
class LabelConditioner(Conditioner):
    def __init__(self, config: LabelConditionerConfig, output_dim: int):
        super().__init__(config, output_dim)
        self.rows = {value: row for row, value in enumerate(config.values, start=1)}
        self.embedder = nn.Embedding(len(config.values) + 1, output_dim)

    def indices(self, values: Sequence[Any]) -> torch.Tensor:
        """Row of each value: 1 + its position in `values`, 0 for an unknown or missing one."""
        rows = [self.rows.get(value, 0) if isinstance(value, str) else 0 for value in values]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def forward(self, values: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.embedder(self.indices(values))[:, None, :]
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


class MultiConditioner(nn.Module):
    """The conditioners by id (`conditioners.<id>`, SAT's key layout)."""

    def __init__(self, config: Any):
        """`config`: a model config with `conditioners` and `cond_dim` (diffusion, lm)."""
        super().__init__()
        self.conditioners = nn.ModuleDict(
            {c.id: build("conditioner", c, output_dim=config.cond_dim) for c in config.conditioners}
        )
        self.fields = {c.id: c.source_field for c in config.conditioners}

    def forward(
        self, values: Mapping[str, Sequence[Any]], ids: Sequence[str]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(tokens, mask) of each conditioner in `ids`, from `values[id]`, else `values[its field]`
        (SAT's MultiConditioner with its default_keys)."""
        missing = sorted({self.fields[i] for i in ids if i not in values and self.fields[i] not in values})
        if missing:
            raise KeyError(f"conditioning values lack the field(s) {', '.join(missing)}")
        return {i: self.conditioners[i](values[i] if i in values else values[self.fields[i]]) for i in ids}


def joined_tokens(
    outputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ids: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens and masks of conditioners `ids`, joined along the sequence in that order. A sample
    with no real token would attend to nothing (NaN): its tokens all count as real there (they are the
    conditioners' zeros, the null)."""
    tokens = torch.cat([outputs[i][0] for i in ids], dim=1)
    mask = torch.cat([outputs[i][1] for i in ids], dim=1)
    return tokens, mask | ~mask.any(dim=1, keepdim=True)


def null_tokens(tokens: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """Condition tokens (B, S, C) with those of the samples in `drop` (B,) bool (all if None) zeroed:
    the null that classifier-free guidance and CFG dropout use."""
    null = torch.zeros_like(tokens)
    return null if drop is None else torch.where(drop[:, None, None], null, tokens)
