"""Configs of the discrete bottlenecks rvq and fsq (torch-free; the modules are in `quantizers.py`)."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.config.base import check_fields
from pipeline.config.registry import register_config
from pipeline.models.autoencoder.bottlenecks_config import BottleneckConfig

MODULE = "pipeline.models.autoencoder.quantizers"


@register_config("bottleneck", "rvq", component=f"{MODULE}:RVQBottleneck")
class RVQBottleneckConfig(BottleneckConfig):
    is_discrete: ClassVar[bool] = True
    type: Literal["rvq"] = "rvq"
    num_quantizers: int = Field(8, ge=1, le=64, description="residual codebooks (codes per frame)")
    codebook_size: int = Field(1024, ge=2, le=2**20, description="entries per codebook (codes are int16 up to 32768)")
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay of the codebook updates")
    commitment_weight: float = Field(1.0, ge=0.0, le=1e6, description="weight of the commitment loss")
    threshold_ema_dead_code: float = Field(2.0, ge=0.0, le=1e9, description="replace codes used less than this")

    @property
    def n_codebooks(self) -> int:
        """Codes per frame (what a language model over the codes predicts per frame)."""
        return self.num_quantizers


# Codes are stored as int16 up to 32768 entries, int32 beyond: no codebook may outgrow int32.
MAX_CODEBOOK_SIZE = 2**31
Level = Annotated[int, Field(ge=2, le=65536)]  # one level maps every value to the same code: nothing is learnt


@register_config("bottleneck", "fsq", component=f"{MODULE}:FSQBottleneck")
class FSQBottleneckConfig(BottleneckConfig):
    is_discrete: ClassVar[bool] = True
    type: Literal["fsq"] = "fsq"
    levels: tuple[Level, ...] = Field(
        (8, 5, 5, 5),
        min_length=1,
        max_length=16,
        description="quantisation levels per dimension of a codebook, each >= 2; their product (the codebook size) "
        "<= 2^31",
    )
    num_codebooks: int = Field(
        1, ge=1, le=64, description="codes per frame; latent_dim = len(levels) * num_codebooks works best"
    )

    @model_validator(mode="after")
    def _codes_fit_their_dtype(self) -> FSQBottleneckConfig:
        if self.codebook_size > MAX_CODEBOOK_SIZE:
            check_fields(
                self,
                [
                    (
                        ("levels",),
                        (
                            f"make a codebook of {self.codebook_size} entries (their product); codes are stored as int32, "
                            f"so at most {MAX_CODEBOOK_SIZE}"
                        ),
                    )
                ],
            )
        return self

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def n_codebooks(self) -> int:
        return self.num_codebooks
