"""`LMConfig` (torch-free): a decoder-only transformer over the discrete codes of an rvq or fsq
autoencoder (audiocraft's MusicGen LM). The model is `pipeline.models.lm.model:LanguageModel`.

Each frame has `n_codebooks` codes of `codebook_size` entries; a codebook `pattern` interleaves them
into one sequence (`patterns.py`); the per-codebook embeddings of a position are summed and one head
per codebook predicts its next code. Conditioning is the diffusion model's: the same conditioners of
width `cond_dim`, cross-attended (`cross_attention_cond_ids`, joined along the sequence) or prepended
to the code sequence (`prepend_cond_ids`, one token each), and per-sample CFG dropout that replaces
the cross-attention tokens by the null (zeros) while prepended ones are kept."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import component_union, discover, register_config
from pipeline.models.conditioners_config import UsesConditioners, cond_id_problems, sample_conditioning_problems
from pipeline.models.diffusion.dit_config import MIN_HEAD_DIM

discover()  # the conditioner configs, for the union below

Problems = list[tuple[tuple[str | int, ...], str]]
PATTERNS = ("delay", "parallel")  # patterns.PATTERNS, here without torch (tested equal)
MAX_VOCABULARY = 2**20  # entries per codebook an LM embeds (rvq's own limit)


@register_config("model", "lm", component="pipeline.models.lm.model:LanguageModel")
class LMConfig(UsesConditioners, ComponentConfig):
    type: Literal["lm"] = "lm"
    n_codebooks: int | None = Field(
        None,
        ge=1,
        le=64,
        description="codes per frame; null: the autoencoder's (when set, the experiment checks they agree)",
    )
    codebook_size: int | None = Field(
        None,
        ge=2,
        le=MAX_VOCABULARY,
        description="entries per codebook (the vocabulary of each head); null: the autoencoder's (checked when set)",
    )
    pattern: Literal["delay", "parallel"] = Field(
        "delay",
        description="codebook interleaving: delay (codebook k shifted by k steps, MusicGen's default) or parallel "
        "(every codebook of a frame at one step)",
    )
    embed_dim: int = Field(512, ge=32, le=8192, description="transformer width")
    depth: int = Field(8, ge=1, le=128, description="transformer blocks")
    num_heads: int = Field(8, ge=1, le=128, description="attention heads; head width is embed_dim / num_heads")
    ff_mult: int = Field(4, ge=1, le=16, description="feed-forward inner width / embed_dim")
    conditioners: tuple[component_union("conditioner"), ...] = Field(  # type: ignore[valid-type]
        (), max_length=64, description="what the model is conditioned on, each read from one metadata field"
    )
    cond_dim: int = Field(0, ge=0, le=8192, description="width of every conditioner's tokens; > 0 with conditioners")
    cross_attention_cond_ids: tuple[str, ...] = Field(
        (), max_length=64, description="conditioners whose tokens every block cross-attends to, in this order"
    )
    prepend_cond_ids: tuple[str, ...] = Field(
        (), max_length=64, description="conditioners whose tokens are prepended to the code sequence, in this order"
    )
    cfg_dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="probability per training sample of replacing its cross-attention tokens by the null "
        "(zeros), so classifier-free guidance has an unconditional model",
    )
    checkpointing: bool = Field(
        False, description="recompute each block's activations in the backward pass: less memory, more time"
    )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @model_validator(mode="after")
    def _check(self) -> LMConfig:
        lists = {"cross_attention_cond_ids": self.cross_attention_cond_ids, "prepend_cond_ids": self.prepend_cond_ids}
        check_fields(self, self._head_problems() + cond_id_problems(self.conditioners, self.cond_dim, lists))
        return self

    def _head_problems(self) -> Problems:
        if self.embed_dim % self.num_heads:
            return [(("embed_dim",), f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")]
        if self.head_dim < MIN_HEAD_DIM:
            message = (
                f"heads of {self.head_dim} channels (embed_dim / num_heads); the rotary embedding needs "
                f"at least {MIN_HEAD_DIM}"
            )
            return [(("num_heads",), message)]
        return []

    # --- checks against the rest of the experiment (called by its validator) ---------------------
    def autoencoder_problems(self, autoencoder: Any) -> Problems:
        """This model against the autoencoder whose codes it trains on (paths relative to train.model)."""
        bottleneck = autoencoder.bottleneck
        if not bottleneck.is_discrete:
            message = (
                f"an LM trains on discrete codes, but the autoencoder's {bottleneck.type} bottleneck makes "
                "continuous latents; use an rvq or fsq bottleneck (or a diffusion model)"
            )
            return [(("type",), message)]
        problems: Problems = []
        for field, theirs in (("n_codebooks", bottleneck.n_codebooks), ("codebook_size", bottleneck.codebook_size)):
            ours = getattr(self, field)
            if ours is not None and ours != theirs:
                message = (
                    f"must equal the autoencoder's {bottleneck.type} bottleneck ({theirs}), got {ours}; "
                    "leave it out to take the autoencoder's"
                )
                problems.append(((field,), message))
        if self.codebook_size is None and bottleneck.codebook_size > MAX_VOCABULARY:
            message = (
                f"the autoencoder's {bottleneck.type} codebooks have {bottleneck.codebook_size} entries, more "
                f"than an LM head predicts (at most {MAX_VOCABULARY}); use fewer fsq levels"
            )
            problems.append((("codebook_size",), message))
        return problems

    def sample_problems(self, sample: Any) -> Problems:
        """The experiment's `sample` section against this model (paths relative to sample)."""
        problems: Problems = []
        if sample.sampler is not None:
            message = f"'{sample.sampler}' is a diffusion sampler; an LM draws codes (leave sample.sampler null)"
            problems.append((("sampler",), message))
        return problems + sample_conditioning_problems(self.conditioners, sample)
