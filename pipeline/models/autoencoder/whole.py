"""`WholeAutoencoder`: the `Autoencoder` API (encode/decode with windows, the facts later stages read)
around a model that encodes and decodes by itself: `type: import`, `encodec`, `dac`. Its `codec` is
the registered component of kind `autoencoder`, with `encode_audio(audio) -> latents or codes`,
`decode_values(latents or codes) -> audio` and `load_weights(path, prefix)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config.registry import build
from pipeline.models.autoencoder.model import DEFAULT_OVERLAP_FRAMES, Autoencoder


class WholeAutoencoder(Autoencoder):
    def __init__(self, config: Any, sample_rate: int):
        nn.Module.__init__(self)
        self.config = config
        self._sample_rate = sample_rate
        self.transform = None
        self.codec = build("autoencoder", config)

    def encode(
        self,
        audio: torch.Tensor,
        return_scale: bool = False,
        chunk_frames: int | None = None,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    ) -> torch.Tensor:
        if return_scale:
            raise ValueError(f"return_scale needs a vae bottleneck; a {self.config.type} autoencoder has none")
        padded = self._pad_to_frames(audio)
        return self._windowed(self.codec.encode_audio, padded, chunk_frames, overlap_frames, self.downsampling_ratio, 1)

    def decode(
        self,
        latents_or_codes: torch.Tensor,
        chunk_frames: int | None = None,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    ) -> torch.Tensor:
        if latents_or_codes.is_floating_point() == self.is_discrete:
            wanted = "integer codes" if self.is_discrete else "floating-point latents"
            raise ValueError(f"this {self.config.type} autoencoder decodes {wanted}, got {latents_or_codes.dtype}")
        ratio = self.downsampling_ratio
        return self._windowed(self.codec.decode_values, latents_or_codes, chunk_frames, overlap_frames, 1, ratio)

    def forward(self, audio: torch.Tensor) -> Any:
        raise NotImplementedError(f"a {self.config.type} autoencoder is not trained here")

    def load_weights(self, path: Path, prefix: str | None = None) -> None:
        """Load the weights strictly, then check the model against what its config states."""
        self.codec.load_weights(path, prefix)
        self.codec.check(self)


def build_autoencoder(config: Any, sample_rate: int) -> Autoencoder:
    """The module for any `autoencoder.model` config (random weights until loaded)."""
    if config.trainable:
        return Autoencoder(config, sample_rate)
    return WholeAutoencoder(config, sample_rate)
