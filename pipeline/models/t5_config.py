"""Config of the `t5` text conditioner (torch-free; the module is in `t5.py`).

stable-audio-tools' `T5Conditioner`: a frozen T5 encoder and its tokenizer, loaded with `transformers`
(an optional extra: `pip install -e .[text]`) from a local directory, never from the hub. Its
prompts come from an item metadata field (`prompt` by default: the `.txt` caption sidecars that
sharding carries into each item's JSON). The encoder's weights are not part of the diffusion
model's state dict (as in stable-audio-tools), so they are neither trained nor exported."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.config.registry import register_config
from pipeline.config.stages import RUNTIME_ONLY
from pipeline.config.types import ResolvedPath
from pipeline.models.conditioners_config import ConditionerConfig

TEXT_DTYPES = ("float16", "bfloat16", "float32")


@register_config("conditioner", "t5", component="pipeline.models.t5:T5Conditioner")
class T5ConditionerConfig(ConditionerConfig):
    """A text prompt -> `max_length` tokens of the T5 encoder's last hidden state, zero where padded."""

    type: Literal["t5"] = "t5"
    model_dir: ResolvedPath = Field(
        description="local directory holding the T5 encoder and its tokenizer as save_pretrained writes them "
        "(config.json, weights, tokenizer files); nothing is downloaded",
    )
    max_length: int = Field(128, ge=1, le=4096, description="tokens per prompt: longer ones are cut, shorter padded")
    dtype: Literal[TEXT_DTYPES] = Field(  # type: ignore[valid-type]
        "float16", description="the encoder's weights (stable-audio-tools: float16); float32 on CPU is faster"
    )
    mask_padding: bool = Field(
        True,
        description="padded tokens are masked out of cross-attention; false: attended to as zero vectors, "
        "as Stable Audio Open was trained (stable-audio-tools' DiT drops the mask)",
    )
    project_out: bool = Field(
        False, description="a learned linear projection to cond_dim even when the encoder is already that wide"
    )
    precompute: Annotated[bool, RUNTIME_ONLY] = Field(
        False,
        description="encode every item's prompt once before training and keep the embeddings beside the "
        "latents (keyed by the text's hash) instead of running the encoder every step",
    )
