"""Configs of the Oobleck encoder and decoder (torch-free; the modules are in `oobleck.py`)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register_config

MAX_WIDTH = 8192  # channels of the widest block (stable-audio-tools' largest VAE: 2048)
MAX_DOWNSAMPLING = 65536  # samples per latent frame (stable-audio-tools' VAE: 2048)
Multiplier = Annotated[int, Field(ge=1, le=64)]
Stride = Annotated[int, Field(ge=1, le=64)]


class _OobleckGeometry(ComponentConfig):
    channels: int = Field(128, ge=1, le=4096, description="base width; block i has channels * c_mults[i]")
    latent_dim: int = Field(32, ge=1, le=4096, description="encoder: output width (2x the latent for a VAE)")
    c_mults: tuple[Multiplier, ...] = Field(
        (1, 2, 4, 8), min_length=1, max_length=16, description=f"width multipliers; channels * c_mult <= {MAX_WIDTH}"
    )
    strides: tuple[Stride, ...] = Field(
        (2, 4, 8, 8),
        min_length=1,
        max_length=16,
        description=f"downsampling per block; their product <= {MAX_DOWNSAMPLING}",
    )
    use_snake: bool = False
    antialias_activation: Literal[False] = Field(False, description="not supported (alias-free activations)")

    @model_validator(mode="after")
    def _check_lengths(self) -> _OobleckGeometry:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if len(self.c_mults) != len(self.strides):
            problems.append(
                (
                    ("strides",),
                    f"c_mults ({len(self.c_mults)} entries) and strides ({len(self.strides)}) must have the same length",
                )
            )
        if max(self.widths) > MAX_WIDTH:
            problems.append(
                (
                    ("c_mults",),
                    f"the widest block would have {max(self.widths)} channels (channels * c_mult); at most {MAX_WIDTH}",
                )
            )
        if self.downsampling_ratio > MAX_DOWNSAMPLING:
            problems.append(
                (("strides",), f"downsample by {self.downsampling_ratio} (their product); at most {MAX_DOWNSAMPLING}")
            )
        check_fields(self, problems)
        return self

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self.strides)

    @property
    def widths(self) -> list[int]:
        """Channel width at each depth: the stem, then after each block."""
        return [self.channels * m for m in (1, *self.c_mults)]


@register_config("encoder", "oobleck", component="pipeline.models.autoencoder.oobleck:OobleckEncoder")
class OobleckEncoderConfig(_OobleckGeometry):
    type: Literal["oobleck"] = "oobleck"
    in_channels: int = Field(2, ge=1, le=64)


@register_config("decoder", "oobleck", component="pipeline.models.autoencoder.oobleck:OobleckDecoder")
class OobleckDecoderConfig(_OobleckGeometry):
    type: Literal["oobleck"] = "oobleck"
    out_channels: int = Field(2, ge=1, le=64)
    use_nearest_upsample: bool = False
    final_tanh: bool = True
