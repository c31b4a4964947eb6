"""Discrete bottlenecks: residual vector quantisation (`rvq`) and finite scalar quantisation (`fsq`).

Both wrap vector-quantize-pytorch (as stable-audio-tools does) rather than re-implementing codebook
updates. `encode` returns the quantised latents and, in `info["codes"]`, integer codes shaped
(batch, n_codebooks, frames); `decode_codes` maps codes back to latents the decoder takes.
The library is imported when a quantiser is built: it costs seconds and continuous models never need it."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register
from pipeline.models.autoencoder.bottlenecks import Bottleneck


class DiscreteBottleneck(Bottleneck):
    is_discrete = True

    @property
    def n_codebooks(self) -> int:
        raise NotImplementedError

    @property
    def codebook_size(self) -> int:
        raise NotImplementedError

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, n_codebooks, frames) integer codes -> (batch, latent_dim, frames) latents."""
        raise NotImplementedError


class RVQBottleneckConfig(ComponentConfig):
    type: Literal["rvq"] = "rvq"
    num_quantizers: int = Field(8, ge=1, le=64, description="residual codebooks (codes per frame)")
    codebook_size: int = Field(1024, ge=2, le=2**20, description="entries per codebook (codes are int16 up to 32768)")
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay of the codebook updates")
    commitment_weight: float = Field(1.0, ge=0.0, le=1e6, description="weight of the commitment loss")
    threshold_ema_dead_code: float = Field(2.0, ge=0.0, le=1e9, description="replace codes used less than this")


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


# Codes are stored as int16 up to 32768 entries, int32 beyond: no codebook may outgrow int32.
MAX_CODEBOOK_SIZE = 2**31
Level = Annotated[int, Field(ge=2, le=65536)]  # one level maps every value to the same code: nothing is learnt


class FSQBottleneckConfig(ComponentConfig):
    type: Literal["fsq"] = "fsq"
    levels: tuple[Level, ...] = Field(
        (8, 5, 5, 5), min_length=1, max_length=16,
        description="quantisation levels per dimension of a codebook, each >= 2; their product (the codebook size) "
        "<= 2^31",
    )
    num_codebooks: int = Field(1, ge=1, le=64, description="codes per frame; latent_dim = len(levels) * num_codebooks works best")

    @model_validator(mode="after")
    def _codes_fit_their_dtype(self) -> "FSQBottleneckConfig":
        if self.codebook_size > MAX_CODEBOOK_SIZE:
            check_fields(self, [(("levels",), (
                f"make a codebook of {self.codebook_size} entries (their product); codes are stored as int32, "
                f"so at most {MAX_CODEBOOK_SIZE}"
            ))])  # fmt: skip
        return self

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)


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
