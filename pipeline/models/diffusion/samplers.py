"""Deterministic samplers of the probability-flow ODE, from noise at t = 1 to data at t = 0, on the
uniform grid t_i = 1 - i / steps (stable-audio-tools' convention; for `v`, x_1 is the noise itself,
since sigma(1) = 1). Every sampler works with both objectives (`objectives.py`); `denoise(x, t)` is
the backbone's output at x (B, C, T) and t (B,).

- euler:    x <- x + (t' - t) dx/dt. For rectified flow this is stable-audio-tools' `sample_discrete_euler`.
- heun:     Euler to t', then the trapezoid of the slopes at t and t' (second order; 2 evaluations a
            step, the last step plain Euler so the model is never asked at t = 0).
- ddim:     x <- alpha' x0 + sigma' e from the step's (x0, e) predictions (eta = 0). Exact for a model
            that predicts x0 perfectly; for rectified flow it is the same update as euler.
- dpmpp_2m: DPM-Solver++(2M) (Lu et al. 2022) in lambda = log(alpha / sigma): the data-prediction ODE
            solved exactly with x0 linear in lambda, through this step's and the previous step's x0:
                x <- (sigma' / sigma) x - alpha' (exp(-h) - 1) D,   h = lambda' - lambda,
                D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev,              r = h_prev / h,
            first order (D = x0, i.e. ddim) on the first step and on the last (t' = 0: x <- x0).

Noise math is float32 whatever the backbone's precision; the schedule is computed in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pipeline.models.diffusion.objectives import OBJECTIVES, alpha_sigma, predictions, velocity

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("euler", "heun", "ddim", "dpmpp_2m")
DEFAULT_SAMPLER = {"v": "dpmpp_2m", "rectified_flow": "euler"}


def schedule(steps: int) -> list[float]:
    """The steps + 1 times 1 = t_0 > t_1 > ... > t_steps = 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [1.0 - i / steps for i in range(steps)] + [0.0]


@torch.no_grad()
def sample(
    denoise: Denoise, noise: torch.Tensor, steps: int, objective: str, sampler: str | None = None
) -> torch.Tensor:
    """x0 (float32, like `noise`) reached from `noise` at t = 1 in `steps` steps."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown diffusion objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    sampler = DEFAULT_SAMPLER[objective] if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    x = noise.float()
    times = schedule(steps)

    def output(x: torch.Tensor, t: float) -> torch.Tensor:
        return denoise(x, torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)).float()

    step = {"euler": _euler, "heun": _heun, "ddim": _ddim, "dpmpp_2m": _Dpmpp2m()}[sampler]
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x = step(output, x, t, t_next, objective)
    return x


Output = Callable[[torch.Tensor, float], torch.Tensor]


def _euler(output: Output, x: torch.Tensor, t: float, t_next: float, objective: str) -> torch.Tensor:
    return x + (t_next - t) * velocity(objective, output(x, t))


def _heun(output: Output, x: torch.Tensor, t: float, t_next: float, objective: str) -> torch.Tensor:
    slope = velocity(objective, output(x, t))
    x_euler = x + (t_next - t) * slope
    if t_next == 0:
        return x_euler
    slope_next = velocity(objective, output(x_euler, t_next))
    return x + (t_next - t) * (slope + slope_next) / 2


def _scales(objective: str, t: float) -> tuple[float, float]:
    alpha, sigma = alpha_sigma(objective, torch.tensor(t, dtype=torch.float64))
    return alpha.item(), sigma.item()


def _ddim(output: Output, x: torch.Tensor, t: float, t_next: float, objective: str) -> torch.Tensor:
    x0, noise = predictions(objective, x, t, output(x, t))
    alpha_next, sigma_next = _scales(objective, t_next)
    return x0 * alpha_next + noise * sigma_next


def _log_snr(objective: str, t: float) -> float:
    """lambda = log(alpha / sigma): -inf where alpha = 0 (rectified flow at t = 1), +inf at t = 0."""
    alpha, sigma = _scales(objective, t)
    if alpha <= 0:
        return -math.inf
    return math.inf if sigma <= 0 else math.log(alpha) - math.log(sigma)


class _Dpmpp2m:
    """DPM-Solver++(2M) steps; remembers the previous step's x0 and h."""

    def __init__(self):
        self.previous: tuple[torch.Tensor, float] | None = None  # (x0, h) of the step before

    def __call__(self, output: Output, x: torch.Tensor, t: float, t_next: float, objective: str) -> torch.Tensor:
        x0, _ = predictions(objective, x, t, output(x, t))
        if t_next == 0:
            return x0
        (alpha_next, sigma_next), (_, sigma) = _scales(objective, t_next), _scales(objective, t)
        h = _log_snr(objective, t_next) - _log_snr(objective, t)
        denoised = x0
        if self.previous is not None and math.isfinite(self.previous[1]):
            x0_prev, h_prev = self.previous
            r = h_prev / h
            denoised = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        self.previous = (x0, h)
        return (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * denoised
