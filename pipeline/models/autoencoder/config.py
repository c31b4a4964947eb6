"""`AutoencoderModelConfig`: encoder -> bottleneck -> decoder, beside the `Autoencoder` it builds.
Torch-free: the component configs come from the registry's `*_config` modules, and its checks read
only config classes (never an nn.Module)."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel, check_fields
from pipeline.config.registry import component_union, discover

discover()  # registered configs must exist before the unions below are built (imports no component)


class AutoencoderModelConfig(StrictModel):
    """Encoder -> bottleneck -> decoder. Encoder and decoder configs expose `in_channels` /
    `out_channels`, `latent_dim` and `downsampling_ratio` (derived from their strides)."""

    encoder: component_union("encoder") = Field(description="audio -> pre-bottleneck latents")  # type: ignore[valid-type]
    decoder: component_union("decoder") = Field(description="latents -> audio")  # type: ignore[valid-type]
    bottleneck: component_union("bottleneck") = Field(description="vae | tanh | identity | rvq | fsq")  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check_geometry(self) -> AutoencoderModelConfig:
        problems = []
        factor = self.bottleneck.encoder_width_factor
        expected = factor * self.decoder.latent_dim
        if self.encoder.latent_dim != expected:
            why = (
                f"{factor} x decoder.latent_dim for a {self.bottleneck.type} bottleneck"
                if factor != 1
                else "decoder.latent_dim"
            )
            problems.append((("encoder", "latent_dim"), f"must be {why} = {expected}, got {self.encoder.latent_dim}"))
        if self.encoder.downsampling_ratio != self.decoder.downsampling_ratio:
            problems.append(
                (
                    ("decoder", "strides"),
                    f"downsample by {self.decoder.downsampling_ratio} but the encoder's by {self.encoder.downsampling_ratio} "
                    f"(encoder strides {list(self.encoder.strides)}, decoder strides {list(self.decoder.strides)})",
                )
            )
        check_fields(self, problems)
        return self

    @property
    def latent_dim(self) -> int:
        return self.decoder.latent_dim

    @property
    def downsampling_ratio(self) -> int:
        return self.encoder.downsampling_ratio
