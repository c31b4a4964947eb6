"""How audio is stored inside the shards: FLAC (16/24-bit) or WAV. One registered `codec` each."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.audio.io import write_audio
from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register


class FlacCodecConfig(ComponentConfig):
    type: Literal["flac"] = "flac"
    bits: Literal[16, 24] = Field(16, description="sample depth of the stored FLAC")
    compression_level: float = Field(0.5, ge=0.0, le=1.0, description="libsndfile FLAC compression, 0 fast .. 1 small")


class WavCodecConfig(ComponentConfig):
    type: Literal["wav"] = "wav"
    bits: Literal[16, 24, 32] = Field(16, description="PCM sample depth")
    float: bool = Field(False, description="store 32-bit float instead of integer PCM (needs bits: 32)")

    @model_validator(mode="after")
    def _float_is_32_bit(self) -> WavCodecConfig:
        """Float WAV is always 32-bit: any other `bits` would mislabel the data and the shard byte budget."""
        if self.float and self.bits != 32:
            check_fields(self, [(("float",), f"float WAV samples are 32-bit: needs bits: 32, got bits: {self.bits}")])
        return self


class _Codec:
    extension: str
    format: str

    def __init__(self, config: FlacCodecConfig | WavCodecConfig):
        self.config = config

    @property
    def subtype(self) -> str:
        return f"PCM_{self.config.bits}"

    def encode(self, audio: np.ndarray, sample_rate: int) -> bytes:
        """`audio` is float (frames, channels) in [-1, 1]; returns the encoded file's bytes."""
        buffer = io.BytesIO()
        write_audio(buffer, audio, sample_rate, self.format, self.subtype, self._compression_level())
        return buffer.getvalue()

    def _compression_level(self) -> float | None:
        return None


@register("codec", "flac", config=FlacCodecConfig)
class FlacCodec(_Codec):
    extension = "flac"
    format = "FLAC"

    def _compression_level(self) -> float | None:
        return self.config.compression_level


@register("codec", "wav", config=WavCodecConfig)
class WavCodec(_Codec):
    extension = "wav"
    format = "WAV"

    @property
    def subtype(self) -> str:
        return "FLOAT" if self.config.float else super().subtype
