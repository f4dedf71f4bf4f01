"""Diffusion samplers as plain functions of a denoise fn, in the style of k-diffusion.

Every sampler takes `denoise(x_t, t) -> x0_pred` (B, C, H, W), t (B,) int64, and walks
`timesteps(schedule, num_steps, t_start)` from x_{t_start} to a clean image: ancestral DDPM
(Ho et al., arXiv 2006.11239, eq. 6-7, on a strided subset), DDIM (Song et al.,
arXiv 2010.02502, eq. 12) and DPM-Solver++(2M) with data prediction (Lu et al.,
arXiv 2211.01095, Algorithm 2). Steps use "trailing" spacing (Lin et al., arXiv 2305.08891,
sec. 3.3): the first step is at t_start exactly, where x_start really lives. The arithmetic is
fp32 whatever precision the network ran in (its x0 prediction is cast to fp32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fashiongen.samplers.schedules import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int], None]


def timesteps(schedule: NoiseSchedule, num_steps: int, t_start: int | None = None) -> list[int]:
    """Descending, distinct timesteps with trailing spacing: t_start first, then every
    (t_start+1)/num_steps, rounded. Its length is the number of network evaluations:
    min(num_steps, t_start + 1).

    Trailing (rather than "leading" 0, 20, .., 980 or "linspace") spacing starts at the
    highest noise level, so a sampler started from pure noise sees the timestep it was
    trained for there, and spends its last step on the smallest noise (Lin et al. Table 2:
    the best FID of the three at few steps).
    """
    t_start = schedule.num_timesteps - 1 if t_start is None else t_start
    if not 0 <= t_start < schedule.num_timesteps:
        raise ValueError(f"t_start must lie in 0..{schedule.num_timesteps - 1}, got {t_start}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    n = min(num_steps, t_start + 1)
    span = t_start + 1
    # floor(span * (n - i) / n + 1/2) - 1 in integers: monotone, so distinct as spacing >= 1
    return [(2 * span * (n - i) + n) // (2 * n) - 1 for i in range(n)]


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Fresh noise drawn on the generator's device (CPU by default), then moved to x's."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _t_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


@torch.no_grad()
def ddim(
    denoise: Denoiser,
    x_start: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    num_steps: int,
    t_start: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. eq. 12); eta = 0 is deterministic, eta = 1 is ancestral DDPM.

    Args:
        denoise: (x_t, t) -> x0 prediction.
        x_start: x_{t_start}, (B, C, H, W); pure noise when t_start is T-1.
        schedule: the noise schedule the denoiser was trained with.
        num_steps: number of network evaluations (at most t_start + 1).
        t_start: the timestep of x_start; default T-1.
        eta: scale of the fresh noise, in [0, 1].
        generator: feeds all fresh noise.
        callback: called as callback(step_index, num_steps) after each step, step_index
            counting from 0.

    Returns:
        x0, (B, C, H, W), the last step's prediction of the clean image.
    """
    return ddim_walk(
        denoise,
        x_start,
        schedule,
        timesteps(schedule, num_steps, t_start),
        -1,
        eta=eta,
        generator=generator,
        callback=callback,
    )


def ddim_walk(
    denoise: Denoiser,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    ts: Sequence[int],
    t_end: int,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM steps from x at ts[0] through the descending timesteps `ts` down to t_end
    (-1: the clean image); `ddim` walks the whole grid, distillation a segment of it."""
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else t_end
        x0 = denoise(x, _t_batch(t, x)).float()
        x = ddim_step(x0, implied_noise(x, x0, schedule, t), schedule, t, t_prev, eta, generator)
        if callback is not None:
            callback(i, len(ts))
    return x


def implied_noise(
    x_t: torch.Tensor, x0: torch.Tensor, schedule: NoiseSchedule, t: int
) -> torch.Tensor:
    """The eps with x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    abar = schedule.alpha_bar(t)
    return (x_t - math.sqrt(abar) * x0) / math.sqrt(1 - abar)


def ddim_noise_sd(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """sigma_t(eta) of DDIM's eq. 16, the fresh noise of a step t -> t_prev; zero on the
    last step (abar_prev = 1)."""
    abar, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    return eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))


def ddim_step(
    x0: torch.Tensor,
    eps: torch.Tensor,
    schedule: NoiseSchedule,
    t: int,
    t_prev: int,
    eta: float,
    generator: torch.Generator | None,
    colour: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
) -> torch.Tensor:
    """x_{t_prev} from the predictions x0 and eps at t (DDIM eq. 12); t_prev = -1 gives x0.
    `colour(white, sigma)` shapes the fresh noise (default: sigma * white)."""
    abar_prev = schedule.alpha_bar(t_prev)
    sigma = ddim_noise_sd(schedule, t, t_prev, eta)
    x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        white = _noise_like(x, generator)
        x = x + (sigma * white if colour is None else colour(white, sigma))
    return x


@torch.no_grad()
def ancestral(
    denoise: Denoiser,
    x_start: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    num_steps: int,
    t_start: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM: draw x_{t'} ~ q(x_{t'} | x_t, x0_pred), the true posterior between any
    two timesteps t' < t (Ho et al. eq. 6-7 generalised to strides), so num_steps = T is the
    original sampler and fewer steps sample a strided subset.

    Args are those of `ddim`; `eta` is ignored (the posterior fixes the noise: DDIM's eta = 1).

    Returns:
        x0, (B, C, H, W).
    """
    return ancestral_walk(
        denoise,
        x_start,
        schedule,
        timesteps(schedule, num_steps, t_start),
        -1,
        generator=generator,
        callback=callback,
    )


def ancestral_walk(
    denoise: Denoiser,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    ts: Sequence[int],
    t_end: int,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral steps through `ts` down to t_end, as `ddim_walk`; `eta` is ignored."""
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else t_end
        x0 = denoise(x, _t_batch(t, x)).float()
        x = posterior_sample(x, x0, schedule, t, t_prev, generator)
        if callback is not None:
            callback(i, len(ts))
    return x


def posterior_sample(
    x_t: torch.Tensor,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    t: int,
    t_prev: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """x_{t_prev} ~ q(x_{t_prev} | x_t, x0) for t_prev < t (Ho et al. eq. 6-7 with the
    stride's effective beta); t_prev = -1 gives the posterior mean at t = 0, noise-free."""
    abar, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    beta = 1 - abar / abar_prev  # the effective beta of the stride t_prev -> t
    coef_x0 = math.sqrt(abar_prev) * beta / (1 - abar)
    coef_xt = math.sqrt(abar / abar_prev) * (1 - abar_prev) / (1 - abar)
    x = coef_x0 * x0 + coef_xt * x_t
    variance = (1 - abar_prev) / (1 - abar) * beta
    if variance > 0:
        x = x + math.sqrt(variance) * _noise_like(x, generator)
    return x


@torch.no_grad()
def dpmpp_2m(
    denoise: Denoiser,
    x_start: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    num_steps: int,
    t_start: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order in lambda = log(alpha/sigma) (Lu et al.
    Algorithm 2); first order on the first step, and the last step returns the x0 prediction
    (sigma = 0 there), as k-diffusion does.

    Args are those of `ddim`; `eta` and `generator` are ignored (a deterministic ODE solver).

    Returns:
        x0, (B, C, H, W).
    """
    return dpmpp_2m_walk(
        denoise,
        x_start,
        schedule,
        timesteps(schedule, num_steps, t_start),
        -1,
        callback=callback,
    )


def dpmpp_2m_walk(
    denoise: Denoiser,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    ts: Sequence[int],
    t_end: int,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) steps through `ts` down to t_end, as `ddim_walk` (first order at
    ts[0]); towards t_end = -1 the last step returns the x0 prediction."""
    x0_prev: torch.Tensor | None = None
    h_prev = 0.0
    for i, t in enumerate(ts):
        x0 = denoise(x, _t_batch(t, x)).float()
        t_next = ts[i + 1] if i + 1 < len(ts) else t_end
        if t_next < 0:
            x = x0
        else:
            abar, abar_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
            alpha_next, sigma_next = math.sqrt(abar_next), math.sqrt(1 - abar_next)
            h = 0.5 * (math.log(abar_next / (1 - abar_next)) - math.log(abar / (1 - abar)))
            if x0_prev is None:
                d = x0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (sigma_next / math.sqrt(1 - abar)) * x - alpha_next * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, len(ts))
    return x
