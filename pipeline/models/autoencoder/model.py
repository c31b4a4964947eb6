"""`Autoencoder`: encoder -> bottleneck -> decoder, the API every later stage uses.

Attribute names (`encoder`, `decoder`, `bottleneck`) match stable-audio-tools' `AudioAutoencoder`, so
its unwrapped checkpoints load key for key. Audio is (batch, channels, samples) at `sample_rate`;
latents are (batch, latent_dim, frames) with frames = ceil(samples / downsampling_ratio) (the audio is
zero-padded on the right to whole frames); codes are (batch, n_codebooks, frames) integers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from pipeline.config.registry import build

if TYPE_CHECKING:
    from pipeline.models.autoencoder.config import AutoencoderModelConfig

DEFAULT_OVERLAP_FRAMES = 16


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderModelConfig, sample_rate: int):
        super().__init__()
        self.config = config
        self.encoder = build("encoder", config.encoder)
        self.decoder = build("decoder", config.decoder)
        self.bottleneck = build("bottleneck", config.bottleneck, dim=config.latent_dim)
        self.transform = build("transform", config.transform) if config.transform is not None else None
        self._sample_rate = sample_rate
        if any(part.type == "import" for part in (config.encoder, config.decoder, config.bottleneck)):
            from pipeline.models.autoencoder.imported import check_parts

            check_parts(self)  # the user's classes against what they state, before any shard is encoded

    # --- what later stages need to know -------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def io_channels(self) -> int:
        """Audio channels."""
        return self.config.in_channels

    @property
    def downsampling_ratio(self) -> int:
        return self.config.downsampling_ratio

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def latent_rate(self) -> float:
        """Latent frames per second of audio."""
        return self.sample_rate / self.downsampling_ratio

    @property
    def is_discrete(self) -> bool:
        return self.config.is_discrete

    @property
    def n_codebooks(self) -> int | None:
        return self.config.n_codebooks

    @property
    def codebook_size(self) -> int | None:
        return self.config.codebook_size

    # --- inference -----------------------------------------------------------------------------
    def encode(
        self,
        audio: torch.Tensor,
        return_scale: bool = False,
        chunk_frames: int | None = None,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Deterministic encoding: the VAE posterior mean (and its scale with `return_scale`), the
        bounded/identity latents, or the integer codes of a discrete bottleneck.

        With `chunk_frames`, the encoder runs on windows of that many frames plus `overlap_frames` of
        context on each side, keeping each window's middle: memory stays bounded for long audio."""
        if return_scale and self.config.bottleneck.type != "vae":
            raise ValueError(f"return_scale needs a vae bottleneck, this one is '{self.config.bottleneck.type}'")
        hidden = self._windowed(
            self.encode_hidden, self._pad_to_frames(audio), chunk_frames, overlap_frames, self.downsampling_ratio, 1
        )
        latents, info = self.bottleneck.encode(hidden, sample=False)
        if self.is_discrete:
            return info["codes"]
        return (latents, info["scale"]) if return_scale else latents

    def decode(
        self,
        latents_or_codes: torch.Tensor,
        chunk_frames: int | None = None,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    ) -> torch.Tensor:
        """Latents (floating point) or codes (integers, discrete bottlenecks) -> audio."""
        if not latents_or_codes.is_floating_point():
            if not self.is_discrete:
                raise ValueError("integer codes given to an autoencoder with a continuous bottleneck")
            latents = self.bottleneck.decode_codes(latents_or_codes)
        else:
            latents = self.bottleneck.decode(latents_or_codes)
        return self._windowed(self.decode_audio, latents, chunk_frames, overlap_frames, 1, self.downsampling_ratio)

    # --- training ------------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Training pass: a sampled VAE latent (or quantised one), its reconstruction and the bottleneck's
        info (`kl` for a VAE, `commitment_loss` for RVQ)."""
        latents, info = self.bottleneck.encode(self.encode_hidden(self._pad_to_frames(audio)), sample=True)
        reconstruction = self.decode_audio(latents)[..., : audio.shape[-1]]
        return reconstruction, info

    # --- helpers -------------------------------------------------------------------------------
    def encode_hidden(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (whole latent frames) -> the encoder's output, through the transform when there is one."""
        return self.encoder(self.transform(audio) if self.transform is not None else audio)

    def decode_audio(self, latents: torch.Tensor) -> torch.Tensor:
        """Bottleneck output -> audio, through the transform's inverse when there is one."""
        decoded = self.decoder(latents)
        return self.transform.inverse(decoded) if self.transform is not None else decoded

    def _pad_to_frames(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != self.io_channels:
            raise ValueError(f"expected audio shaped (batch, {self.io_channels}, samples), got {tuple(audio.shape)}")
        remainder = audio.shape[-1] % self.downsampling_ratio
        return F.pad(audio, (0, self.downsampling_ratio - remainder)) if remainder else audio

    @staticmethod
    def _windowed(
        function: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        chunk_frames: int | None,
        overlap_frames: int,
        in_per_frame: int,
        out_per_frame: int,
    ) -> torch.Tensor:
        """Apply `function` to windows of `chunk_frames` frames with `overlap_frames` of context each side."""
        frames = x.shape[-1] // in_per_frame
        if chunk_frames is None or frames <= chunk_frames:
            return function(x)
        if chunk_frames < 1 or overlap_frames < 0:
            raise ValueError(f"chunk_frames must be >= 1 and overlap_frames >= 0, got {chunk_frames}, {overlap_frames}")
        pieces = []
        with parametrize.cached():  # weight norm computed once for all windows
            for start in range(0, frames, chunk_frames):
                stop = min(start + chunk_frames, frames)
                low, high = max(0, start - overlap_frames), min(frames, stop + overlap_frames)
                window = function(x[..., low * in_per_frame : high * in_per_frame])
                keep_from = (start - low) * out_per_frame
                pieces.append(window[..., keep_from : keep_from + (stop - start) * out_per_frame])
        return torch.cat(pieces, dim=-1)


def frames_for(samples: int, downsampling_ratio: int) -> int:
    """Latent frames `encode` returns for `samples` of audio."""
    return math.ceil(samples / downsampling_ratio)
