"""Samplers on data whose exact denoiser is known: x0 ~ N(mu, s^2) per channel. Its probability-flow
ODE maps noise e to mu + s e exactly (the monotone map between two Gaussians), so every sampler must
land there, closer with more steps, and the second-order ones (heun, dpmpp_2m) closer than euler / ddim."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.diffusion import objectives, samplers

MU = torch.tensor([0.3, -1.0, 2.0])[None, :, None]
SCALE = torch.tensor([0.5, 1.0, 2.0])[None, :, None]
PAIRS = [(objective, sampler) for objective in objectives.OBJECTIVES for sampler in samplers.SAMPLERS]


def exact_denoiser(objective: str):
    """The MMSE output at (x_t, t): E[x0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + sigma^2),
    E[e | x_t] = sigma (x_t - a mu) / (a^2 s^2 + sigma^2), combined into v or u = e - x0."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = objectives.alpha_sigma(objective, t[:, None, None])
        variance = alpha**2 * SCALE**2 + sigma**2
        x0 = MU + alpha * SCALE**2 * (x - alpha * MU) / variance
        eps = sigma * (x - alpha * MU) / variance
        return alpha * eps - sigma * x0 if objective == "v" else eps - x0

    return denoise


def noise(batch: int = 64, frames: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, frames, generator=torch.Generator().manual_seed(0))


def error(objective: str, sampler: str, steps: int, e: torch.Tensor) -> float:
    out = samplers.sample(exact_denoiser(objective), e, steps, objective, sampler)
    """Root mean square distance to the exact sample, in data standard deviations."""
    return ((out - (MU + SCALE * e)) / SCALE).square().mean().sqrt().item()


@pytest.mark.parametrize("objective, sampler", PAIRS)
def test_samples_have_the_data_distribution(objective, sampler):
    e = noise(256, 64)
    out = samplers.sample(exact_denoiser(objective), e, 100, objective, sampler)
    assert out.dtype == torch.float32 and out.shape == e.shape
    assert error(objective, sampler, 100, e) < 0.02
    # 16384 draws per channel: the sample mean is within 4 standard errors of mu, the std within 3%
    assert torch.all((out.mean((0, 2)) - MU.flatten()).abs() < 4 * SCALE.flatten() / 128)
    assert torch.all((out.std((0, 2)) / SCALE.flatten() - 1).abs() < 0.03)


@pytest.mark.parametrize("objective, sampler", PAIRS)
def test_error_shrinks_with_steps(objective, sampler):
    e = noise()
    errors = [error(objective, sampler, steps, e) for steps in (10, 20, 40)]
    # per halving of the step: first order ~2x, heun ~4x; dpmpp_2m 2.4x to 3.5x on this uniform grid in
    # t, whose first and last steps are long in lambda = log(alpha / sigma) and first order
    ratio = {"heun": 3.5, "dpmpp_2m": 2.3}.get(sampler, 1.8)
    assert errors[0] > ratio * errors[1] > ratio**2 * errors[2], errors


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
def test_second_order_samplers_beat_first_order_at_equal_steps(objective):
    e = noise()
    for steps in (10, 20):
        assert error(objective, "heun", steps, e) < error(objective, "euler", steps, e) / 3
        assert error(objective, "dpmpp_2m", steps, e) < error(objective, "ddim", steps, e) / 2


def test_ddim_is_euler_for_rectified_flow_and_sampling_is_deterministic():
    e = noise()
    denoise = exact_denoiser("rectified_flow")
    euler = samplers.sample(denoise, e, 7, "rectified_flow", "euler")
    torch.testing.assert_close(samplers.sample(denoise, e, 7, "rectified_flow", "ddim"), euler)
    for objective, sampler in PAIRS:
        first = samplers.sample(exact_denoiser(objective), e, 5, objective, sampler)
        assert torch.equal(first, samplers.sample(exact_denoiser(objective), e, 5, objective, sampler))


def test_evaluations_start_at_noise_and_never_reach_zero():
    seen: list[float] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32
        seen.append(t[0].item())
        return torch.zeros_like(x)

    e = noise(2, 4)
    for sampler, calls in (("euler", 4), ("heun", 7), ("ddim", 4), ("dpmpp_2m", 4)):
        seen.clear()
        samplers.sample(denoise, e, 4, "v", sampler)
        assert len(seen) == calls and seen[0] == 1.0 and min(seen) == 0.25


def test_defaults_and_refusals():
    assert samplers.DEFAULT_SAMPLER == {"v": "dpmpp_2m", "rectified_flow": "euler"}
    e = noise(2, 4)
    default = samplers.sample(exact_denoiser("v"), e, 5, "v")
    torch.testing.assert_close(default, samplers.sample(exact_denoiser("v"), e, 5, "v", "dpmpp_2m"))
    with pytest.raises(ValueError, match="unknown sampler 'k-heun'"):
        samplers.sample(exact_denoiser("v"), e, 5, "v", "k-heun")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        samplers.sample(exact_denoiser("v"), e, 0, "v")
    with pytest.raises(ValueError, match="unknown diffusion objective"):
        samplers.sample(exact_denoiser("v"), e, 5, "eps")
