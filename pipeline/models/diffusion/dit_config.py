"""Config of the 1-D diffusion transformer (torch-free; the module is in `dit.py`).

Fields are named as stable-audio-tools' `DiffusionTransformer` arguments, so its model configs
translate key for key; SAT's defaults are ours."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import register_config

# SAT's rotary embedding rotates max(head_dim // 2, 32) channels of every head, so a head narrower
# than 32 channels cannot be built (SAT fails inside the first attention).
MIN_HEAD_DIM = 32


@register_config("backbone", "dit", component="pipeline.models.diffusion.dit:DiffusionTransformer")
class DiTConfig(ComponentConfig):
    type: Literal["dit"] = "dit"
    io_channels: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="latent channels; null: the autoencoder's latent_dim (when set, the experiment checks they agree)",
    )
    embed_dim: int = Field(768, ge=32, le=8192, description="transformer width")
    depth: int = Field(12, ge=1, le=128, description="transformer blocks")
    num_heads: int = Field(8, ge=1, le=128, description="attention heads; head width is embed_dim / num_heads")
    ff_mult: int = Field(
        4, ge=1, le=16, description="feed-forward inner width / embed_dim (SAT: transformer ff_kwargs.mult)"
    )
    cond_token_dim: int = Field(
        0, ge=0, le=8192, description="width of the cross-attention condition tokens; 0: no cross-attention"
    )
    project_cond_tokens: bool = Field(
        True,
        description="project condition tokens to embed_dim; false: keys and values keep cond_token_dim "
        "(fewer key/value heads, shared between query heads)",
    )
    global_cond_dim: int = Field(0, ge=0, le=8192, description="width of the global condition vector; 0: none")
    project_global_cond: bool = Field(
        True, description="project the global condition to embed_dim; false: it must already be embed_dim wide"
    )
    global_cond_type: Literal["prepend", "adaLN"] = Field(
        "prepend",
        description="prepend: the global embedding (timestep + global condition) is one extra token; "
        "adaLN: it scales, shifts and gates every block",
    )
    patch_size: int = Field(1, ge=1, le=64, description="latent frames per transformer token")
    timestep_features_dim: int = Field(
        256, ge=2, le=4096, multiple_of=2, description="Fourier features of the timestep (SAT fixes 256)"
    )
    transformer_type: Literal["continuous_transformer"] = Field(
        "continuous_transformer", description="SAT's transformer family; the only one supported"
    )
    checkpointing: bool = Field(
        False, description="recompute each block's activations in the backward pass: less memory, more time"
    )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @model_validator(mode="after")
    def _check_geometry(self) -> DiTConfig:
        problems = self._head_problems() + self._condition_problems()
        check_fields(self, problems)
        return self

    def _head_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        if self.embed_dim % self.num_heads:
            message = f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            return [(("embed_dim",), message)]
        if self.head_dim < MIN_HEAD_DIM:
            message = (
                f"heads of {self.head_dim} channels (embed_dim / num_heads); the rotary embedding needs "
                f"at least {MIN_HEAD_DIM}"
            )
            return [(("num_heads",), message)]
        return []

    def _condition_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Unprojected conditions keep their width: global ones are added to the timestep embedding,
        tokens are split into key/value heads of head_dim channels shared by num_heads query heads."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.global_cond_dim and not self.project_global_cond and self.global_cond_dim != self.embed_dim:
            message = f"global_cond_dim {self.global_cond_dim} must equal embed_dim {self.embed_dim} when not projected"
            problems.append((("global_cond_dim",), message))
        if self.cond_token_dim and not self.project_cond_tokens and self.embed_dim % self.num_heads == 0:
            kv_heads, rest = divmod(self.cond_token_dim, self.head_dim)
            if rest or kv_heads == 0 or self.num_heads % kv_heads:
                message = (
                    f"unprojected condition tokens of {self.cond_token_dim} channels must split into key/value "
                    f"heads of {self.head_dim} channels (embed_dim / num_heads) whose number divides num_heads "
                    f"{self.num_heads}"
                )
                problems.append((("cond_token_dim",), message))
        return problems
