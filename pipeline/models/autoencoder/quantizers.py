"""Discrete bottlenecks: residual vector quantisation (`rvq`) and finite scalar quantisation (`fsq`).

Both wrap vector-quantize-pytorch (as stable-audio-tools does) rather than re-implementing codebook
updates. `encode` returns the quantised latents and, in `info["codes"]`, integer codes shaped
(batch, n_codebooks, frames); `decode_codes` maps codes back to latents the decoder takes.
The library is imported when a quantiser is built: it costs seconds and continuous models never need it."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.config.registry import register
from pipeline.models.autoencoder.bottlenecks import Bottleneck
from pipeline.models.autoencoder.quantizers_config import FSQBottleneckConfig, RVQBottleneckConfig


class DiscreteBottleneck(Bottleneck):
    @property
    def n_codebooks(self) -> int:
        raise NotImplementedError

    @property
    def codebook_size(self) -> int:
        raise NotImplementedError

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, n_codebooks, frames) integer codes -> (batch, latent_dim, frames) latents."""
        raise NotImplementedError


@register("bottleneck", "rvq", config=RVQBottleneckConfig)
class RVQBottleneck(DiscreteBottleneck):
    def __init__(self, config: RVQBottleneckConfig, dim: int):
        super().__init__(config, dim)
        from vector_quantize_pytorch import ResidualVQ

        self.quantizer = ResidualVQ(
            dim=dim,
            num_quantizers=config.num_quantizers,
            codebook_size=config.codebook_size,
            decay=config.decay,
            commitment_weight=config.commitment_weight,
            threshold_ema_dead_code=config.threshold_ema_dead_code,
        )

    @property
    def n_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        quantised, codes, commitment = self.quantizer(x.transpose(1, 2))
        return quantised.transpose(1, 2), {"codes": codes.transpose(1, 2), "commitment_loss": commitment.mean()}

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.get_output_from_indices(codes.transpose(1, 2).long()).transpose(1, 2)


@register("bottleneck", "fsq", config=FSQBottleneckConfig)
class FSQBottleneck(DiscreteBottleneck):
    def __init__(self, config: FSQBottleneckConfig, dim: int):
        super().__init__(config, dim)
        from vector_quantize_pytorch import FSQ

        self.quantizer = FSQ(
            levels=list(config.levels), dim=dim, num_codebooks=config.num_codebooks, keep_num_codebooks_dim=True
        )

    @property
    def n_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def encode(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        quantised, codes = self.quantizer(x.float().transpose(1, 2))
        return quantised.transpose(1, 2).to(x.dtype), {"codes": codes.long().transpose(1, 2)}

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.indices_to_codes(codes.transpose(1, 2).int()).transpose(1, 2)
