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
from pipeline.models.autoencoder.imported import PATH, expect_shape, probe

PROBE_FRAMES = 2


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
        from pipeline.models.autoencoder.checkpoints import (
            check_finite_weights,
            load_strict,
            normalise_keys,
            read_state_dict,
        )

        weights = self.config.weights_file
        state = normalise_keys(read_state_dict(weights), [prefix] if prefix else [])
        load_strict(self.model, state, source=str(weights))
        check_finite_weights(state, str(weights))

    def check(self, owner: Any) -> None:
        """Two frames of zeros through encode and decode: the shapes config.json promised."""
        config = self.config
        audio = torch.zeros(1, config.in_channels, PROBE_FRAMES * config.downsampling_ratio)
        values = probe(self.encode_audio, self.model, audio, PATH, f"{config.type} encode")
        width = config.n_codebooks if config.is_discrete else config.latent_dim
        expect_shape(values, PATH, f"{config.type} encode", {0: 1, 1: width, -1: PROBE_FRAMES}, (3,))
        back = probe(self.decode_values, self.model, values, PATH, f"{config.type} decode")
        expect_shape(back, PATH, f"{config.type} decode", {0: 1, 1: config.in_channels, -1: audio.shape[-1]}, (3,))


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
