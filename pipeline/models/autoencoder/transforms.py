"""`STFTTransform`: audio (batch, channels, samples) <-> spectrogram (batch, 2 x channels, bins, frames).

Samples must be a whole number of hops (the autoencoder pads to whole latent frames first): the audio
is zero-padded by (n_fft - hop) / 2 on both sides and framed without centring, so frame t covers the
hop [t * hop, (t + 1) * hop) in its middle and there are samples / hop frames. The inverse is a
windowed overlap-add divided by the summed squared window, then the padding is cut: exact to float
precision wherever the window envelope is non-zero (guaranteed by the config's hop <= n_fft / 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config.registry import register
from pipeline.models.autoencoder.transforms_config import STFTTransformConfig

WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "rectangular": torch.ones,
}
LOG_FLOOR = 1e-8  # |X| below this has no phase to keep


@register("transform", "stft", config=STFTTransformConfig)
class STFTTransform(nn.Module):
    def __init__(self, config: STFTTransformConfig):
        super().__init__()
        self.config = config
        self.register_buffer("window", WINDOWS[config.window](config.n_fft), persistent=False)
        self.pad = (config.n_fft - config.hop_length) // 2
        self.scale = config.n_fft**-0.5 if config.normalized else 1.0

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        batch, channels, samples = audio.shape
        if samples % self.config.hop_length:
            raise ValueError(f"the stft transform takes whole hops of {self.config.hop_length} samples, got {samples}")
        flat = F.pad(audio.reshape(batch * channels, samples).float(), (self.pad, self.pad))
        spectrum = torch.stft(
            flat, self.config.n_fft, self.config.hop_length, window=self.window, center=False, return_complex=True
        )
        spectrum = self._compress(spectrum * self.scale)
        parts = torch.view_as_real(spectrum)  # (batch * channels, bins, frames, 2)
        bins, frames = parts.shape[1:3]
        return (
            parts.reshape(batch, channels, bins, frames, 2)
            .permute(0, 1, 4, 2, 3)
            .reshape(batch, 2 * channels, bins, frames)
        )

    def inverse(self, parts: torch.Tensor) -> torch.Tensor:
        batch, doubled, bins, frames = parts.shape
        channels = doubled // 2
        pairs = parts.float().reshape(batch, channels, 2, bins, frames).permute(0, 1, 3, 4, 2).contiguous()
        spectrum = self._expand(torch.view_as_complex(pairs.reshape(batch * channels, bins, frames, 2))) / self.scale
        n_fft, hop = self.config.n_fft, self.config.hop_length
        pieces = torch.fft.irfft(spectrum, n=n_fft, dim=1) * self.window[:, None]  # (batch * channels, n_fft, frames)
        length = (frames - 1) * hop + n_fft
        fold = dict(output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
        summed = F.fold(pieces, **fold).reshape(batch * channels, length)
        envelope = F.fold((self.window**2)[None, :, None].expand(1, n_fft, frames), **fold).reshape(1, length)
        audio = summed / envelope.clamp_min(1e-11)
        return audio[:, self.pad : self.pad + frames * hop].reshape(batch, channels, frames * hop)

    def _compress(self, spectrum: torch.Tensor) -> torch.Tensor:
        return self._remagnitude(spectrum, self._forward_magnitude)

    def _expand(self, spectrum: torch.Tensor) -> torch.Tensor:
        return self._remagnitude(spectrum, self._inverse_magnitude)

    def _forward_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        if self.config.magnitude == "power":
            return magnitude.pow(self.config.exponent)
        return torch.log1p(magnitude)

    def _inverse_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        if self.config.magnitude == "power":
            return magnitude.pow(1.0 / self.config.exponent)
        return torch.expm1(magnitude)

    def _remagnitude(self, spectrum: torch.Tensor, change) -> torch.Tensor:
        """The same phases with `change(|X|)` as magnitudes (nothing to do for `linear`)."""
        if self.config.magnitude == "linear":
            return spectrum
        magnitude = spectrum.abs()
        phase = spectrum / magnitude.clamp_min(LOG_FLOOR)
        return change(magnitude) * phase
