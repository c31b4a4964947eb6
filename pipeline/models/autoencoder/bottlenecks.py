"""Continuous bottlenecks: vae (mean/scale split, softplus scale, KL), tanh, identity.

`encode(x, sample=...)` returns (latents, info); for the VAE, `info` holds `kl`, `mean` and `scale`
(the softplus standard deviation). Pre-encoding stores the mean, never a single random draw."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config.base import ComponentConfig
from pipeline.config.registry import register


class Bottleneck(nn.Module):
    is_discrete = False
    encoder_width_factor = 1  # encoder output width / latent width

    def __init__(self, config: ComponentConfig, dim: int):
        """`dim`: the latent width (decoder input); quantisers need it, the others ignore it."""
        super().__init__()
        self.config = config

    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class VAEBottleneckConfig(ComponentConfig):
    type: Literal["vae"] = "vae"


@register("bottleneck", "vae", config=VAEBottleneckConfig)
class VAEBottleneck(Bottleneck):
    encoder_width_factor = 2

    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        mean, scale_logit = x.chunk(2, dim=1)
        stdev = F.softplus(scale_logit) + 1e-4
        variance = stdev * stdev
        kl = (mean * mean + variance - variance.log() - 1).sum(1).mean()
        latents = mean + torch.randn_like(mean) * stdev if sample else mean
        return latents, {"kl": kl, "mean": mean, "scale": stdev}


class TanhBottleneckConfig(ComponentConfig):
    type: Literal["tanh"] = "tanh"
    scale: float = Field(1.0, gt=0.0, le=1e6)


@register("bottleneck", "tanh", config=TanhBottleneckConfig)
class TanhBottleneck(Bottleneck):
    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.tanh(x / self.config.scale) * self.config.scale, {}


class IdentityBottleneckConfig(ComponentConfig):
    type: Literal["identity"] = "identity"


@register("bottleneck", "identity", config=IdentityBottleneckConfig)
class IdentityBottleneck(Bottleneck):
    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        return x, {}
