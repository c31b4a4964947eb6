"""Building blocks shared by models: weight-normalised convolutions, Snake activation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def wn_conv1d(*args, **kwargs) -> nn.Conv1d:
    """Conv1d with weight normalisation (state-dict keys `parametrizations.weight.original0/1`)."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args, **kwargs) -> nn.ConvTranspose1d:
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class SnakeBeta(nn.Module):
    """x + 1/beta * sin^2(alpha x), per channel, alpha and beta stored as logs (BigVGAN / stable-audio-tools)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.exp()[None, :, None]
        beta = self.beta.exp()[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


def activation(use_snake: bool, channels: int) -> nn.Module:
    return SnakeBeta(channels) if use_snake else nn.ELU()
