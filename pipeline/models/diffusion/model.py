"""The conditioned diffusion model: conditioners + a backbone + an objective, with CFG dropout in
training and classifier-free guidance in sampling (stable-audio-tools' ConditionedDiffusionModelWrapper
and the CFG part of its DiT).

State-dict layout: `conditioner.conditioners.<id>.*` as SAT's MultiConditioner, and `model.*` the
backbone (SAT nests its DiT one level deeper, `model.model.*`).

The null condition is SAT's: cross-attention tokens become zeros (masks kept), and the global
condition is kept as it is, in training dropout and in guidance alike; for Stable Audio Open it is
the timing (seconds_start, seconds_total), which guidance should not remove. So a model whose only
conditions are global has no unconditional mode: its dropout and guidance change nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.config.registry import build, register
from pipeline.models.conditioners import MultiConditioner, joined_tokens, null_tokens
from pipeline.models.diffusion import objectives, samplers
from pipeline.models.diffusion.diffusion_config import DiffusionModelConfig

Tensor = torch.Tensor
Conditioning = dict[str, Tensor | None]  # cross_attn_cond, cross_attn_mask, global_cond


@dataclass(frozen=True)
class LossDraws:
    """A training step's randomness: noise (B, C, T), t (B,) in [0, 1] and keep (B,) bool (False: the
    sample's cross-attention condition is replaced by the null). A caller may draw them per item (in
    DataLoader workers) or let `draw` take them from one generator."""

    noise: Tensor
    t: Tensor
    keep: Tensor

    @classmethod
    def draw(
        cls, generator: torch.Generator, shape: torch.Size, timestep_sampler: str, cfg_dropout: float
    ) -> LossDraws:
        """t, then the noise, then the dropout, from `generator` on its own device."""
        t = objectives.sample_timesteps(timestep_sampler, shape[0], generator)
        noise = torch.randn(shape, generator=generator, device=generator.device)
        keep = torch.rand(shape[0], generator=generator, device=generator.device) >= cfg_dropout
        return cls(noise=noise, t=t, keep=keep)

    def to(self, device: torch.device) -> LossDraws:
        return LossDraws(noise=self.noise.float().to(device), t=self.t.float().to(device), keep=self.keep.to(device))


@register("model", "diffusion", config=DiffusionModelConfig)
class DiffusionModel(nn.Module):
    def __init__(self, config: DiffusionModelConfig, io_channels: int):
        super().__init__()
        self.config = config
        self.io_channels = io_channels
        self.objective = config.objective
        self.conditioner = MultiConditioner(config)
        self.model = build("backbone", config.backbone, io_channels=io_channels)

    def conditioning(self, values: Mapping[str, Sequence[Any]]) -> Conditioning:
        """Backbone inputs from one value per item for each conditioner (`values[id]` or
        `values[field]`): the cross-attention ids' tokens and masks joined along the sequence, the
        global ids' first tokens along channels."""
        cross_ids, global_ids = self.config.cross_attention_cond_ids, self.config.global_cond_ids
        outputs = self.conditioner(values, list(dict.fromkeys((*cross_ids, *global_ids))))
        cond: Conditioning = {"cross_attn_cond": None, "cross_attn_mask": None, "global_cond": None}
        if cross_ids:
            cond["cross_attn_cond"], cond["cross_attn_mask"] = joined_tokens(outputs, cross_ids)
        if global_ids:
            cond["global_cond"] = torch.cat([outputs[i][0][:, 0] for i in global_ids], dim=-1)
        return cond

    @staticmethod
    def null_conditioning(cond: Conditioning, drop: Tensor | None = None) -> Conditioning:
        """`cond` with the cross-attention tokens of the samples in `drop` (B,) bool (all if None) zeroed."""
        tokens = cond["cross_attn_cond"]
        return dict(cond) if tokens is None else {**cond, "cross_attn_cond": null_tokens(tokens, drop)}

    def loss(
        self,
        latents: Tensor,
        mask: Tensor | None,
        values: Mapping[str, Sequence[Any]],
        draws: torch.Generator | LossDraws,
    ) -> tuple[Tensor, dict[str, float]]:
        """The objective's masked MSE on `latents` (B, C, T) with padding `mask` (B, T) (True: real).
        `draws`: the step's t, noise and CFG dropout, or a generator to draw them from (`LossDraws.draw`)."""
        x = latents.float()
        if isinstance(draws, torch.Generator):
            draws = LossDraws.draw(draws, x.shape, self.config.timestep_sampler, self.config.cfg_dropout)
        _check_draws(draws, x)
        draws = draws.to(x.device)
        cond = self.null_conditioning(self.conditioning(values), ~draws.keep)
        noised, target = objectives.noised_and_target(self.objective, x, draws.noise, draws.t)
        output = self.model(noised, draws.t, **cond, mask=mask)
        loss = objectives.masked_mse(output, target, mask)
        mse, t_mean, dropped = torch.stack([loss.detach(), draws.t.mean(), (~draws.keep).float().mean()]).tolist()
        return loss, {"mse": mse, "t_mean": t_mean, "cfg_dropped": dropped}

    @torch.no_grad()
    def generate(
        self,
        noise: Tensor,
        values: Mapping[str, Sequence[Any]],
        steps: int,
        cfg_scale: float = 1.0,
        sampler: str | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Latents (B, C, T) float32 from `noise` (B, C, T) at t = 1, deterministically (no fresh noise).
        cfg_scale != 1 runs the conditioned and null passes as one batch: null + (cond - null) * scale.
        `sampler`: one of samplers.SAMPLERS; None picks the objective's default. Train/eval mode is the
        caller's."""
        cond = self.conditioning(values)
        guided = cfg_scale != 1.0 and cond["cross_attn_cond"] is not None
        if guided:
            cond = _batched(cond, self.null_conditioning(cond))
            mask = None if mask is None else torch.cat([mask, mask])

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            if not guided:
                return self.model(x, t, **cond, mask=mask).float()
            out_cond, out_null = self.model(torch.cat([x, x]), torch.cat([t, t]), **cond, mask=mask).float().chunk(2)
            return out_null + (out_cond - out_null) * cfg_scale

        return samplers.sample(denoise, noise, steps, self.objective, sampler)


def _check_draws(draws: LossDraws, x: Tensor) -> None:
    batch = x.shape[0]
    if draws.noise.shape != x.shape or draws.t.shape != (batch,) or draws.keep.shape != (batch,):
        shapes = f"noise {tuple(draws.noise.shape)}, t {tuple(draws.t.shape)}, keep {tuple(draws.keep.shape)}"
        raise ValueError(
            f"draws for latents {tuple(x.shape)} must be noise of that shape, t and keep ({batch},); got {shapes}"
        )
    if draws.keep.dtype != torch.bool:
        raise ValueError(f"draws.keep must be bool, got {draws.keep.dtype}")


def _batched(a: Conditioning, b: Conditioning) -> Conditioning:
    return {key: None if a[key] is None else torch.cat([a[key], b[key]]) for key in a}
