"""Published codecs through `transformers` (the `text` extra): EnCodec (`EncodecModel`, MusicGen's
tokenizer) and DAC (`DacModel`), loaded from a local directory (`config.json` + `model.safetensors`,
what `save_pretrained` writes; never the hub). Validation reads only `config.json` (torch-free): the
sample rate, channels, hop (downsampling ratio), codebooks and latent width come from it.

`output: codes` feeds the LM path (integer codes, codebook count by `bandwidth` for EnCodec, by
`n_codebooks` for DAC); `output: latents` the diffusion path (the encoder's continuous output before
quantisation, decoded by the codec's decoder)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from pipeline.config.base import check_fields
from pipeline.config.registry import register_config
from pipeline.config.types import ResolvedPath
from pipeline.models.autoencoder.whole_config import WholeAutoencoderConfig

MODULE = "pipeline.models.autoencoder.codecs"
WEIGHTS_FILE = "model.safetensors"


class _CodecConfig(WholeAutoencoderConfig):
    """Facts are read from `<path>/config.json` once, at validation."""

    model_type: ClassVar[str]
    channels_field: ClassVar[tuple[str, ...]] = ("path",)
    rate_field: ClassVar[tuple[str, ...]] = ("path",)
    path: ResolvedPath = Field(
        description="local directory of the model: config.json + model.safetensors (save_pretrained)"
    )
    output: Literal["codes", "latents"] = Field(
        "codes", description="codes: integer codes (LM path); latents: the encoder's continuous output (diffusion path)"
    )
    _hf: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _read_config(self) -> _CodecConfig:
        config_file = self.path / "config.json"
        problem = None
        try:
            hf = json.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problem = f"no {config_file} (a {self.model_type} model directory written by save_pretrained)"
        except (OSError, ValueError) as error:
            problem = f"{config_file} is not readable JSON ({error})"
        else:
            if not isinstance(hf, dict) or hf.get("model_type") != self.model_type:
                found = hf.get("model_type") if isinstance(hf, dict) else None
                problem = f"{config_file} describes model_type {found!r}, not {self.model_type!r}"
            elif not (self.path / WEIGHTS_FILE).is_file():
                problem = f"no {self.path / WEIGHTS_FILE} beside config.json (the weights)"
        if problem is not None:
            check_fields(self, [(("path",), problem)])
        self._hf = hf
        check_fields(self, self._problems())
        return self

    def _problems(self) -> list[tuple[tuple[str, ...], str]]:
        return []

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def sample_rate(self) -> int:
        return int(self._hf["sampling_rate"])

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self._hf["upsampling_ratios"])

    @property
    def latent_dim(self) -> int:
        return int(self._hf["hidden_size"])

    @property
    def codebook_size(self) -> int | None:
        return int(self._hf["codebook_size"]) if self.output == "codes" else None


@register_config("autoencoder", "encodec", component=f"{MODULE}:EncodecCodec")
class EncodecCodecConfig(_CodecConfig):
    model_type: ClassVar[str] = "encodec"
    type: Literal["encodec"] = "encodec"
    bandwidth: float | None = Field(
        None,
        gt=0.0,
        le=1000.0,
        description="kbps, one of the model's target_bandwidths: picks the codebook count; null: the smallest",
    )

    def _problems(self) -> list[tuple[tuple[str, ...], str]]:
        problems = []
        bandwidths = self._hf.get("target_bandwidths") or []
        if self.bandwidth is not None and self.bandwidth not in bandwidths:
            problems.append(
                (("bandwidth",), f"must be one of the model's target_bandwidths {bandwidths}, got {self.bandwidth}")
            )
        for key in ("normalize", "chunk_length_s"):
            if self._hf.get(key):
                problems.append(
                    (
                        ("path",),
                        f"the model's config.json sets {key}: {self._hf[key]} (per-chunk scales); not supported",
                    )
                )
        return problems

    @property
    def in_channels(self) -> int:
        return int(self._hf.get("audio_channels", 1))

    @property
    def n_codebooks(self) -> int | None:
        """Codes per frame at `bandwidth`, as EnCodec's quantiser counts them."""
        if self.output != "codes":
            return None
        frame_rate = math.ceil(self.sample_rate / self.downsampling_ratio)
        per_codebook = math.log2(self.codebook_size or 2) * frame_rate
        bandwidth = self.bandwidth if self.bandwidth is not None else min(self._hf.get("target_bandwidths") or [0.0])
        total = len_quantizers(self._hf, frame_rate)
        return min(total, max(1, math.floor(bandwidth * 1000 / per_codebook))) if bandwidth > 0 else total


def len_quantizers(hf: dict[str, Any], frame_rate: int) -> int:
    """EnCodec's num_quantizers: the codebooks of its largest target bandwidth."""
    nbits = math.ceil(math.log2(hf["codebook_size"]))
    return int(1000 * hf["target_bandwidths"][-1] // (frame_rate * nbits))


@register_config("autoencoder", "dac", component=f"{MODULE}:DacCodec")
class DacCodecConfig(_CodecConfig):
    model_type: ClassVar[str] = "dac"
    type: Literal["dac"] = "dac"
    n_codebooks: int | None = Field(
        None, ge=1, le=64, description="codebooks used (the first n); null: all of the model's"
    )

    def _problems(self) -> list[tuple[tuple[str, ...], str]]:
        available = int(self._hf.get("n_codebooks", 9))
        if self.n_codebooks is not None and self.n_codebooks > available:
            return [(("n_codebooks",), f"the model has {available} codebooks, got {self.n_codebooks}")]
        if self.output == "codes" and self.n_codebooks is None:
            object.__setattr__(self, "n_codebooks", available)
        return []

    @property
    def in_channels(self) -> int:
        return 1  # DAC is mono

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self._hf.get("downsampling_ratios") or [self._hf["hop_length"]])
