"""What every whole-autoencoder config (`autoencoder.model: {type: import | encodec | dac}`) tells
validation, torch-free, in the same words as the encoder/decoder/bottleneck composite
(`AutoencoderModelConfig`): channels, latent width or codebooks, downsampling ratio, sample rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline.config.base import ComponentConfig

Problems = list[tuple[tuple[str | int, ...], str]]


@dataclass(frozen=True)
class BottleneckFacts:
    """Stands in for a bottleneck config where checks read `model.bottleneck` (the LM and diffusion
    models' checks against their autoencoder)."""

    type: str
    is_discrete: bool
    n_codebooks: int | None = None
    codebook_size: int | None = None
    encoder_width_factor: int = 1


class WholeAutoencoderConfig(ComponentConfig):
    """A model that encodes and decodes by itself (no encoder/decoder/bottleneck split)."""

    trainable: ClassVar[bool] = False  # train_autoencoder trains the composite only
    channels_field: ClassVar[tuple[str, ...]] = ("channels",)  # where a channel mismatch is reported
    rate_field: ClassVar[tuple[str, ...]] = ("sample_rate",)

    # Subclasses give (as properties or fields): in_channels, sample_rate (None: any), latent_dim,
    # downsampling_ratio, n_codebooks and codebook_size (None for continuous latents).

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def is_discrete(self) -> bool:
        return self.codebook_size is not None

    @property
    def bottleneck(self) -> BottleneckFacts:
        return BottleneckFacts(self.type, self.is_discrete, self.n_codebooks, self.codebook_size)

    @property
    def weights_file(self) -> Path | None:
        """Weights the model brings itself (a codec's directory); None: `autoencoder.checkpoint`."""
        return None

    def data_problems(self, channels: int, sample_rate: int) -> Problems:
        """This model against `data` (paths relative to autoencoder.model)."""
        problems: Problems = []
        if self.in_channels != channels:
            problems.append(
                (self.channels_field, f"the model takes {self.in_channels} channel(s); data.channels is {channels}")
            )
        if self.sample_rate is not None and self.sample_rate != sample_rate:
            problems.append(
                (self.rate_field, f"the model works at {self.sample_rate} Hz; data.sample_rate is {sample_rate}")
            )
        return problems
