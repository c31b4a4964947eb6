"""Diffusion objectives: how data x and noise e mix at time t in [0, 1], what the backbone predicts,
how training draws t, and the masked MSE (facts from stable-audio-tools' training/diffusion.py).

    x_t = alpha(t) x + sigma(t) e            t = 0: data, t = 1: noise
    v:               alpha = cos(t pi/2), sigma = sin(t pi/2), target v = alpha e - sigma x
    rectified_flow:  alpha = 1 - t,       sigma = t,          target u = e - x

From an output both give the data and noise predictions (x0, e) the samplers use, and the
probability-flow ODE's dx_t/dt = alpha'(t) x0 + sigma'(t) e, which is (pi/2) v and u respectively.

Timesteps: `uniform` is U[0, 1) (stable-audio-tools draws it from a scrambled Sobol sequence; here it
comes from the caller's generator, so a resumed run draws what an uninterrupted one would),
`logit_normal` is sigmoid(N(0, 1)). All arithmetic is float32."""

from __future__ import annotations

import math

import torch

OBJECTIVES = ("v", "rectified_flow")
TIMESTEP_SAMPLERS = ("uniform", "logit_normal")


def _per_sample(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """t as a float32 tensor broadcasting against `like` (B, ...): a scalar, or (B,) -> (B, 1, ...)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=like.device)
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def alpha_sigma(objective: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The data and noise scales at t (any shape)."""
    if objective == "v":
        return torch.cos(t * (math.pi / 2)), torch.sin(t * (math.pi / 2))
    if objective == "rectified_flow":
        return 1 - t, t
    raise ValueError(f"unknown diffusion objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def noised_and_target(
    objective: str, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, the output the backbone is trained to give) for data x, noise and t (B,)."""
    x, noise = x.float(), noise.float()
    alpha, sigma = alpha_sigma(objective, _per_sample(t, x))
    noised = x * alpha + noise * sigma
    target = noise * alpha - x * sigma if objective == "v" else noise - x
    return noised, target


def predictions(
    objective: str, x_t: torch.Tensor, t: torch.Tensor | float, output: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, noise) implied by the backbone's `output` at (x_t, t)."""
    x_t, output = x_t.float(), output.float()
    if objective == "v":  # invert [x_t; v] = [[alpha, sigma], [-sigma, alpha]] [x0; e] (a rotation)
        alpha, sigma = alpha_sigma(objective, _per_sample(t, x_t))
        return x_t * alpha - output * sigma, x_t * sigma + output * alpha
    if objective == "rectified_flow":  # x_t = x0 + t u and e = x0 + u
        t = _per_sample(t, x_t)
        return x_t - t * output, x_t + (1 - t) * output
    raise ValueError(f"unknown diffusion objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def velocity(objective: str, output: torch.Tensor) -> torch.Tensor:
    """dx_t/dt of the probability-flow ODE, from the backbone's output."""
    if objective == "v":
        return output.float() * (math.pi / 2)
    if objective == "rectified_flow":
        return output.float()
    raise ValueError(f"unknown diffusion objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def timesteps_from(sampler: str, uniform: torch.Tensor | None, normal: torch.Tensor | None) -> torch.Tensor:
    """t from a U[0, 1) draw and a N(0, 1) draw: `uniform` itself, or sigmoid(`normal`) (only the draw
    the sampler uses need be given). The one mapping behind `sample_timesteps` and the per-item draws
    of the training data (`train/diffusion.py`)."""
    if sampler == "uniform" and uniform is not None:
        return uniform
    if sampler == "logit_normal" and normal is not None:
        return torch.sigmoid(normal)
    if sampler in TIMESTEP_SAMPLERS:
        raise ValueError(f"the {sampler} timestep sampler needs its draw")
    raise ValueError(f"unknown timestep sampler {sampler!r}; known: {', '.join(TIMESTEP_SAMPLERS)}")


def sample_timesteps(sampler: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """t (batch,) float32, drawn from `generator` on its own device (only the draw the sampler uses)."""
    device = generator.device
    if sampler == "uniform":
        return timesteps_from(sampler, torch.rand(batch, generator=generator, device=device), None)
    if sampler == "logit_normal":
        return timesteps_from(sampler, None, torch.randn(batch, generator=generator, device=device))
    return timesteps_from(sampler, None, None)  # unknown: raises


def masked_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over each sample's valid frames (mask (B, T) True) and all channels, then
    the mean over the batch, so a short item weighs as much as a long one. (stable-audio-tools takes
    one mean over every valid element of the batch instead.) A sample with no valid frame adds 0."""
    error = (output.float() - target.float()).square()
    if mask is None:
        return error.mean()
    weights = mask[:, None, :].to(error.dtype).expand_as(error)
    per_sample = (error * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1)
    return per_sample.mean()
