"""Config of the autoencoder's pre/post transform (torch-free; the module is in `transforms.py`).

`autoencoder.model.transform: {type: stft, ...}` turns the audio into a spectrogram before the encoder
and the decoder's spectrogram back into audio: complex values as channels (real and imaginary of each
audio channel: 2 x audio channels), magnitudes optionally compressed (`power`: |X|^exponent, `log`:
log(1 + |X|)), phases kept, so that the inverse reconstructs the audio to float precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register_config

COMPLEX_PARTS = 2  # real and imaginary, as channels


@register_config("transform", "stft", component="pipeline.models.autoencoder.transforms:STFTTransform")
class STFTTransformConfig(ComponentConfig):
    type: Literal["stft"] = "stft"
    n_fft: int = Field(512, ge=4, le=65536, description="FFT size (= window length); n_fft // 2 + 1 frequency bins")
    hop_length: int = Field(128, ge=1, le=65536, description="samples between frames: one spectrogram frame per hop")
    window: Literal["hann", "hamming", "blackman", "rectangular"] = Field("hann", description="analysis window")
    complex_as_channels: Literal[True] = Field(
        True, description="real and imaginary parts as channels: the encoder takes 2 x audio channels"
    )
    magnitude: Literal["linear", "power", "log"] = Field(
        "linear", description="magnitude compression (phase kept): power: |X|^exponent; log: log(1 + |X|)"
    )
    exponent: float = Field(0.5, gt=0.0, le=1.0, description="with magnitude: power, the power-law exponent")
    normalized: bool = Field(True, description="scale the STFT by 1/sqrt(n_fft) (unit-power frames)")

    @model_validator(mode="after")
    def _invertible(self) -> STFTTransformConfig:
        problems = []
        if (self.n_fft - self.hop_length) % 2:
            problems.append(
                (
                    ("hop_length",),
                    f"n_fft - hop_length must be even (frames centred on hops), got {self.n_fft} - {self.hop_length}",
                )
            )
        if self.window != "rectangular" and self.hop_length > self.n_fft // 2:
            problems.append(
                (
                    ("hop_length",),
                    f"at most n_fft / 2 = {self.n_fft // 2} with a {self.window} window (else the inverse is not exact), got {self.hop_length}",
                )
            )
        if self.hop_length > self.n_fft:
            problems.append(
                (
                    ("hop_length",),
                    f"at most n_fft ({self.n_fft}), got {self.hop_length}: samples between frames would be lost",
                )
            )
        check_fields(self, problems)
        return self

    @property
    def downsampling_ratio(self) -> int:
        """Audio samples per spectrogram frame."""
        return self.hop_length

    @property
    def frequency_bins(self) -> int:
        return self.n_fft // 2 + 1

    def channels(self, audio_channels: int) -> int:
        """Encoder input channels for `audio_channels` of audio."""
        return COMPLEX_PARTS * audio_channels
