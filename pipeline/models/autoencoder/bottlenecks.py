"""Continuous bottlenecks: vae (mean/scale split, softplus scale, KL), tanh, identity.

`encode(x, sample=...)` returns (latents, info); for the VAE, `info` holds `kl`, `mean` and `scale`
(the softplus standard deviation). Pre-encoding stores the mean, never a single random draw."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config.registry import register
from pipeline.models.autoencoder.bottlenecks_config import (
    BottleneckConfig,
    IdentityBottleneckConfig,
    TanhBottleneckConfig,
    VAEBottleneckConfig,
)


class Bottleneck(nn.Module):
    def __init__(self, config: BottleneckConfig, dim: int):
        """`dim`: the latent width (decoder input); quantisers need it, the others ignore it."""
        super().__init__()
        self.config = config

    @property
    def is_discrete(self) -> bool:
        return self.config.is_discrete

    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


@register("bottleneck", "vae", config=VAEBottleneckConfig)
class VAEBottleneck(Bottleneck):
    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        mean, scale_logit = x.chunk(2, dim=1)
        stdev = F.softplus(scale_logit) + 1e-4
        variance = stdev * stdev
        kl = (mean * mean + variance - variance.log() - 1).sum(1).mean()
        latents = mean + torch.randn_like(mean) * stdev if sample else mean
        return latents, {"kl": kl, "mean": mean, "scale": stdev}


@register("bottleneck", "tanh", config=TanhBottleneckConfig)
class TanhBottleneck(Bottleneck):
    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.tanh(x / self.config.scale) * self.config.scale, {}


@register("bottleneck", "identity", config=IdentityBottleneckConfig)
class IdentityBottleneck(Bottleneck):
    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        return x, {}
