"""Configs of the continuous bottlenecks (torch-free; the modules are in `bottlenecks.py`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pipeline.config.base import ComponentConfig
from pipeline.config.registry import register_config

MODULE = "pipeline.models.autoencoder.bottlenecks"


class BottleneckConfig(ComponentConfig):
    """What validation knows about a bottleneck before any module is built."""

    encoder_width_factor: ClassVar[int] = 1  # encoder output width / latent width
    is_discrete: ClassVar[bool] = False


@register_config("bottleneck", "vae", component=f"{MODULE}:VAEBottleneck")
class VAEBottleneckConfig(BottleneckConfig):
    encoder_width_factor: ClassVar[int] = 2  # the encoder emits mean and scale
    type: Literal["vae"] = "vae"


@register_config("bottleneck", "tanh", component=f"{MODULE}:TanhBottleneck")
class TanhBottleneckConfig(BottleneckConfig):
    type: Literal["tanh"] = "tanh"
    scale: float = Field(1.0, gt=0.0, le=1e6)


@register_config("bottleneck", "identity", component=f"{MODULE}:IdentityBottleneck")
class IdentityBottleneckConfig(BottleneckConfig):
    type: Literal["identity"] = "identity"
