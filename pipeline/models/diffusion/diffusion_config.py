"""`DiffusionModelConfig` (torch-free): a backbone, its conditioners, the objective and how training
draws timesteps and drops conditions. The model is `pipeline.models.diffusion.model:DiffusionModel`.

The layout is stable-audio-tools' `diffusion_cond` model: `conditioners` and `cond_dim` are its
`conditioning.configs` / `conditioning.cond_dim`, the id lists its `diffusion.*_cond_ids`. Every
conditioner emits tokens of width cond_dim; cross-attention ids are joined along the sequence (the
backbone's cond_token_dim input is cond_dim, projected or not), global ids' first tokens along the
channels (its global_cond_dim input is cond_dim x their number: Stable Audio Open's 768 x 2 = 1536)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.registry import component_union, discover, register_config
from pipeline.models.conditioners_config import UsesConditioners, cond_id_problems, sample_conditioning_problems

# The backbone and conditioner configs must be registered before the unions below are built. Inside
# discover() itself (this module is one it imports) the nested call imports the rest and returns.
discover()

Problems = list[tuple[tuple[str | int, ...], str]]
SAMPLERS = ("euler", "heun", "ddim", "dpmpp_2m")  # samplers.SAMPLERS, here without torch (tested equal)


@register_config("model", "diffusion", component="pipeline.models.diffusion.model:DiffusionModel")
class DiffusionModelConfig(UsesConditioners, ComponentConfig):
    type: Literal["diffusion"] = "diffusion"
    backbone: component_union("backbone") = Field(  # type: ignore[valid-type]
        description="the denoising network, e.g. {type: dit, ...}"
    )
    objective: Literal["v", "rectified_flow"] = Field(
        "v", description="v: cosine schedule, v-prediction; rectified_flow: linear path, velocity noise - data"
    )
    timestep_sampler: Literal["uniform", "logit_normal"] = Field(
        "uniform", description="how training draws t: U[0, 1), or sigmoid of a standard normal"
    )
    conditioners: tuple[component_union("conditioner"), ...] = Field(  # type: ignore[valid-type]
        (), max_length=64, description="what the model is conditioned on, each read from one metadata field"
    )
    cond_dim: int = Field(0, ge=0, le=8192, description="width of every conditioner's tokens; > 0 with conditioners")
    cross_attention_cond_ids: tuple[str, ...] = Field(
        (), max_length=64, description="conditioners whose tokens the backbone cross-attends to, in this order"
    )
    global_cond_ids: tuple[str, ...] = Field(
        (), max_length=64, description="conditioners whose first token, joined along channels, is the global condition"
    )
    cfg_dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="probability per training sample of replacing its cross-attention tokens by the null "
        "(zeros), so classifier-free guidance has an unconditional model",
    )

    @model_validator(mode="after")
    def _check_conditioning(self) -> DiffusionModelConfig:
        check_fields(self, self._id_problems() + self._width_problems())
        return self

    def _id_problems(self) -> Problems:
        lists = {"cross_attention_cond_ids": self.cross_attention_cond_ids, "global_cond_ids": self.global_cond_ids}
        return cond_id_problems(self.conditioners, self.cond_dim, lists)

    def _width_problems(self) -> Problems:
        """The backbone's condition inputs must be exactly as wide as what the conditioners feed them
        (0 where nothing does: an unfed input layer would be parameters that never get a gradient)."""
        problems: Problems = []
        token_dim = getattr(self.backbone, "cond_token_dim", None)
        expected = self.cond_dim if self.cross_attention_cond_ids else 0
        if token_dim is not None and token_dim != expected:
            why = "cond_dim" if self.cross_attention_cond_ids else "0: no cross_attention_cond_ids"
            problems.append((("backbone", "cond_token_dim"), f"must be {why} = {expected}, got {token_dim}"))
        global_dim = getattr(self.backbone, "global_cond_dim", None)
        expected = self.cond_dim * len(self.global_cond_ids)
        if global_dim is not None and global_dim != expected:
            why = (
                f"cond_dim x {len(self.global_cond_ids)} global_cond_ids"
                if self.global_cond_ids
                else "0: no global_cond_ids"
            )
            problems.append((("backbone", "global_cond_dim"), f"must be {why} = {expected}, got {global_dim}"))
        return problems

    # --- checks against the rest of the experiment (called by its validator) ---------------------
    def autoencoder_problems(self, autoencoder: Any) -> Problems:
        """This model against the autoencoder whose latents it trains on (paths relative to train.model)."""
        bottleneck = autoencoder.bottleneck
        if bottleneck.is_discrete:
            return [
                (
                    ("type",),
                    f"a diffusion model trains on continuous latents, but the autoencoder's {bottleneck.type} "
                    "bottleneck makes discrete codes; use a vae, tanh or identity bottleneck",
                )
            ]
        io_channels = getattr(self.backbone, "io_channels", None)
        if io_channels is not None and io_channels != autoencoder.latent_dim:
            return [
                (
                    ("backbone", "io_channels"),
                    f"must equal the autoencoder's latent dim ({autoencoder.latent_dim}), got {io_channels}; "
                    "leave it out to take the autoencoder's",
                )
            ]
        return []

    def sample_problems(self, sample: Any) -> Problems:
        """The experiment's `sample` section against this model (paths relative to sample)."""
        problems: Problems = []
        if sample.sampler is not None and sample.sampler not in SAMPLERS:
            problems.append((("sampler",), f"'{sample.sampler}' is not one of {', '.join(SAMPLERS)}"))
        problems += sample_conditioning_problems(self.conditioners, sample)
        return problems
