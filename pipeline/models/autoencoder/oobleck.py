"""Oobleck encoder and decoder (stable-audio-tools' convolutional VAE backbone).

Parameter names and module layout match stable-audio-tools' `OobleckEncoder` / `OobleckDecoder`
exactly (`layers.<i>.layers.<j>...`), so its checkpoints load strictly after the weight-norm key
rename done by `pipeline.models.autoencoder.checkpoints`."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config.registry import register
from pipeline.models.autoencoder.oobleck_config import OobleckDecoderConfig, OobleckEncoderConfig
from pipeline.models.modules import activation, wn_conv1d, wn_conv_transpose1d


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
        layers += [
            activation(config.use_snake, widths[-1]),
            wn_conv1d(widths[-1], config.latent_dim, kernel_size=3, padding=1),
        ]
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
            layers.append(
                DecoderBlock(
                    widths[i], widths[i - 1], config.strides[i - 1], config.use_snake, config.use_nearest_upsample
                )
            )
        layers += [
            activation(config.use_snake, widths[0]),
            wn_conv1d(widths[0], config.out_channels, kernel_size=7, padding=3, bias=False),
            nn.Tanh() if config.final_tanh else nn.Identity(),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)
