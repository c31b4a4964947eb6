"""EnCodec and DAC through `transformers` (optional extra), built from their local directory's
config.json and loaded strictly from its model.safetensors (never the hub, never a random init).

Codes come from the codec's own residual quantiser ((batch, n_codebooks, frames), the first
n_codebooks of EnCodec's bandwidth or DAC's setting); latents are the encoder's continuous output
before quantisation, decoded by the codec's decoder directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config.registry import register
from pipeline.errors import UserFacingError
from pipeline.models.autoencoder.codecs_config import DacCodecConfig, EncodecCodecConfig
from pipeline.models.autoencoder.imported import PATH, check_whole, load_module_weights


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserFacingError(
            f"{PATH}: the encodec and dac codecs need `transformers` (pip install 'pipeline[text]')"
        ) from None
    return transformers


class _Codec(nn.Module):
    hf_model: str
    hf_config: str  # (not config_class: @register sets that)

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        transformers = _transformers()
        hf_config = getattr(transformers, self.hf_config).from_pretrained(str(config.path))
        self.model = getattr(transformers, self.hf_model)(hf_config).eval()

    def load_weights(self, path: Path | None, prefix: str | None) -> None:
        """The directory's model.safetensors (`path`, autoencoder.checkpoint, is unset for codecs)."""
        load_module_weights(self.model, self.config.weights_file, prefix)

    def check(self, owner: Any) -> None:
        check_whole(self, self.model, self.config.type)


@register("autoencoder", "encodec", config=EncodecCodecConfig)
class EncodecCodec(_Codec):
    hf_model, hf_config = "EncodecModel", "EncodecConfig"

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        embeddings = self.model.encoder(audio)
        if not self.config.is_discrete:
            return embeddings
        codes = self.model.quantizer.encode(embeddings, self.config.bandwidth)  # (n_codebooks, batch, frames)
        return codes[: self.config.n_codebooks].transpose(0, 1)

    def decode_values(self, values: torch.Tensor) -> torch.Tensor:
        if values.is_floating_point():
            return self.model.decoder(values)
        return self.model.decoder(self.model.quantizer.decode(values.transpose(0, 1)))


@register("autoencoder", "dac", config=DacCodecConfig)
class DacCodec(_Codec):
    hf_model, hf_config = "DacModel", "DacConfig"

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        latents = self.model.encoder(audio)
        if not self.config.is_discrete:
            return latents
        codes = self.model.quantizer(latents, self.config.n_codebooks)[1]
        return codes[:, : self.config.n_codebooks]

    def decode_values(self, values: torch.Tensor) -> torch.Tensor:
        if values.is_floating_point():
            return self.model.decoder(values)
        return self.model.decoder(self.model.quantizer.from_codes(values)[0])
