"""Oobleck encoder and decoder (stable-audio-tools' convolutional VAE backbone).

Parameter names and module layout match stable-audio-tools' `OobleckEncoder` / `OobleckDecoder`
exactly (`layers.<i>.layers.<j>...`), so its checkpoints load strictly after the weight-norm key
rename done by `pipeline.models.autoencoder.checkpoints`."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register
from pipeline.models.modules import activation, wn_conv1d, wn_conv_transpose1d


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
        (2, 4, 8, 8), min_length=1, max_length=16, description=f"downsampling per block; their product <= {MAX_DOWNSAMPLING}"
    )
    use_snake: bool = False
    antialias_activation: Literal[False] = Field(False, description="not supported (alias-free activations)")

    @model_validator(mode="after")
    def _check_lengths(self) -> "_OobleckGeometry":
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if len(self.c_mults) != len(self.strides):
            problems.append((
                ("strides",), f"c_mults ({len(self.c_mults)} entries) and strides ({len(self.strides)}) must have the same length"
            ))  # fmt: skip
        if max(self.widths) > MAX_WIDTH:
            problems.append((
                ("c_mults",), f"the widest block would have {max(self.widths)} channels (channels * c_mult); at most {MAX_WIDTH}"
            ))  # fmt: skip
        if self.downsampling_ratio > MAX_DOWNSAMPLING:
            problems.append((
                ("strides",), f"downsample by {self.downsampling_ratio} (their product); at most {MAX_DOWNSAMPLING}"
            ))  # fmt: skip
        check_fields(self, problems)
        return self

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self.strides)

    @property
    def widths(self) -> list[int]:
        """Channel width at each depth: the stem, then after each block."""
        return [self.channels * m for m in (1, *self.c_mults)]


class OobleckEncoderConfig(_OobleckGeometry):
    type: Literal["oobleck"] = "oobleck"
    in_channels: int = Field(2, ge=1, le=64)


class OobleckDecoderConfig(_OobleckGeometry):
    type: Literal["oobleck"] = "oobleck"
    out_channels: int = Field(2, ge=1, le=64)
    use_nearest_upsample: bool = False
    final_tanh: bool = True


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int, use_snake: bool):
        super().__init__()
        self.layers = nn.Sequential(
            activation(use_snake, channels),
            wn_conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=dilation * 3),
            activation(use_snake, channels),
            wn_conv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool):
        super().__init__()
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, dilation, use_snake) for dilation in (1, 3, 9)),
            activation(use_snake, in_channels),
            wn_conv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool, use_nearest_upsample: bool):
        super().__init__()
        if use_nearest_upsample:
            upsample: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=stride, mode="nearest"),
                wn_conv1d(in_channels, out_channels, kernel_size=2 * stride, stride=1, bias=False, padding="same"),
            )
        else:
            upsample = wn_conv_transpose1d(
                in_channels, out_channels, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)
            )
        self.layers = nn.Sequential(
            activation(use_snake, in_channels),
            upsample,
            *(ResidualUnit(out_channels, dilation, use_snake) for dilation in (1, 3, 9)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register("encoder", "oobleck", config=OobleckEncoderConfig)
class OobleckEncoder(nn.Module):
    """(batch, in_channels, samples) -> (batch, latent_dim, samples / prod(strides))."""

    def __init__(self, config: OobleckEncoderConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        layers: list[nn.Module] = [wn_conv1d(config.in_channels, widths[0], kernel_size=7, padding=3)]
        for i, stride in enumerate(config.strides):
            layers.append(EncoderBlock(widths[i], widths[i + 1], stride, config.use_snake))
        layers += [activation(config.use_snake, widths[-1]), wn_conv1d(widths[-1], config.latent_dim, kernel_size=3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.layers(audio)


@register("decoder", "oobleck", config=OobleckDecoderConfig)
class OobleckDecoder(nn.Module):
    """(batch, latent_dim, frames) -> (batch, out_channels, frames * prod(strides))."""

    def __init__(self, config: OobleckDecoderConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        layers: list[nn.Module] = [wn_conv1d(config.latent_dim, widths[-1], kernel_size=7, padding=3)]
        for i in range(len(config.strides), 0, -1):
            layers.append(DecoderBlock(widths[i], widths[i - 1], config.strides[i - 1], config.use_snake,
                                       config.use_nearest_upsample))  # fmt: skip
        layers += [
            activation(config.use_snake, widths[0]),
            wn_conv1d(widths[0], config.out_channels, kernel_size=7, padding=3, bias=False),
            nn.Tanh() if config.final_tanh else nn.Identity(),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)
