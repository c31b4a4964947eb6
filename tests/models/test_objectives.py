"""Objectives: x_t and targets as stable-audio-tools computes them, predictions invert them, the ODE
velocity is d x_t / dt, timesteps come from the generator, the masked MSE weighs samples equally."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.diffusion import objectives


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 10, generator=g), torch.randn(4, 3, 10, generator=g), torch.tensor([0.0, 0.25, 0.7, 1.0])


def test_v_objective_is_the_cosine_schedule():
    x, noise, t = batch()
    noised, target = objectives.noised_and_target("v", x, noise, t)
    alpha, sigma = torch.cos(t * math.pi / 2)[:, None, None], torch.sin(t * math.pi / 2)[:, None, None]
    torch.testing.assert_close(noised, x * alpha + noise * sigma)
    torch.testing.assert_close(target, noise * alpha - x * sigma)
    torch.testing.assert_close(noised[0], x[0])
    torch.testing.assert_close(target[0], noise[0])


def test_rectified_flow_is_the_straight_path():
    x, noise, t = batch()
    noised, target = objectives.noised_and_target("rectified_flow", x, noise, t)
    torch.testing.assert_close(noised, x * (1 - t)[:, None, None] + noise * t[:, None, None])
    torch.testing.assert_close(target, noise - x)
    torch.testing.assert_close(noised[-1], noise[-1])


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
def test_predictions_invert_the_target_and_velocity_is_the_time_derivative(objective):
    x, noise, t = batch()
    t = t.clamp(0.05, 0.95)
    noised, target = objectives.noised_and_target(objective, x, noise, t)
    x0, eps = objectives.predictions(objective, noised, t, target)
    torch.testing.assert_close(x0, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=1e-5)
    h = 1e-2  # central difference in float32: error ~ h^2 (pi/2)^3 |x| + 1e-7 / h
    ahead, _ = objectives.noised_and_target(objective, x, noise, t + h)
    behind, _ = objectives.noised_and_target(objective, x, noise, t - h)
    torch.testing.assert_close(objectives.velocity(objective, target), (ahead - behind) / (2 * h), atol=2e-3, rtol=1e-3)


def test_noise_math_is_float32_whatever_the_input():
    x, noise, t = batch()
    noised, target = objectives.noised_and_target("v", x.bfloat16(), noise.bfloat16(), t)
    assert noised.dtype == target.dtype == torch.float32
    assert objectives.predictions("v", noised.bfloat16(), t, target.bfloat16())[0].dtype == torch.float32


def test_timesteps_come_from_the_generator():
    def draw(sampler: str, seed: int) -> torch.Tensor:
        return objectives.sample_timesteps(sampler, 20000, torch.Generator().manual_seed(seed))

    for sampler in objectives.TIMESTEP_SAMPLERS:
        assert torch.equal(draw(sampler, 1), draw(sampler, 1)) and not torch.equal(draw(sampler, 1), draw(sampler, 2))
        t = draw(sampler, 3)
        assert t.dtype == torch.float32 and t.shape == (20000,) and 0 <= t.min() and t.max() < 1
    uniform = draw("uniform", 4)
    assert abs(uniform.mean() - 0.5) < 0.01 and abs(uniform.var() - 1 / 12) < 0.003
    logits = torch.logit(draw("logit_normal", 5).double())
    assert abs(logits.mean()) < 0.03 and abs(logits.std() - 1) < 0.03
    with pytest.raises(ValueError, match="unknown timestep sampler"):
        draw("sobol", 0)


def test_masked_mse_averages_valid_frames_per_sample_then_samples():
    g = torch.Generator().manual_seed(0)
    output, target = torch.randn(3, 2, 8, generator=g), torch.randn(3, 2, 8, generator=g)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2, :] = False
    per_sample = [((output[0] - target[0]) ** 2).mean(), ((output[1, :, :2] - target[1, :, :2]) ** 2).mean(), 0.0]
    torch.testing.assert_close(objectives.masked_mse(output, target, mask), sum(per_sample) / 3)
    full = torch.ones(3, 8, dtype=torch.bool)
    torch.testing.assert_close(objectives.masked_mse(output, target, full), ((output - target) ** 2).mean())
    torch.testing.assert_close(objectives.masked_mse(output, target, None), ((output - target) ** 2).mean())


def test_frames_outside_the_mask_get_no_gradient():
    output = torch.randn(2, 3, 6, requires_grad=True)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    objectives.masked_mse(output, torch.zeros(2, 3, 6), mask).backward()
    assert torch.all(output.grad[0, :, 4:] == 0) and torch.all(output.grad[0, :, :4] != 0)
