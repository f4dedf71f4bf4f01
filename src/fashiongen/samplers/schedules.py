"""Discrete-time Gaussian noise schedules and conversions between network parametrisations.

The forward process q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) of DDPM (Ho et al.,
arXiv 2006.11239) with the `linear` beta schedule of that paper or the `cosine` schedule of
Nichol & Dhariwal (arXiv 2102.09672, eq. 17, betas clipped at 0.999), and conversions between
the three things a network may predict: the noise `eps`, the clean image `x0`, or the velocity
`v = sqrt(abar) eps - sqrt(1 - abar) x0` of Salimans & Ho (arXiv 2202.00512, sec. 4).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from fashiongen.errors import ConfigError

ScheduleKind = Literal["linear", "cosine"]
Prediction = Literal["eps", "x0", "v"]

LINEAR_BETA_START = 1e-4  # Ho et al. 2020, sec. 4, for T = 1000
LINEAR_BETA_END = 0.02
COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal eq. 17
MAX_BETA = 0.999  # Nichol & Dhariwal clip, avoiding a singularity at t = T


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """Ho et al.'s betas, rescaled by 1000/T so that other T keep the same endpoints' SNR."""
    scale = 1000 / num_timesteps
    return torch.linspace(
        scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_timesteps, dtype=torch.float64
    )


def cosine_alpha_bar(u: torch.Tensor) -> torch.Tensor:
    """f(u) / f(0) with f(u) = cos^2(((u + s) / (1 + s)) pi/2), u = t/T in [0, 1] (eq. 17)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.cos((x + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return f(u) / f(torch.zeros_like(u))


def cosine_betas(num_timesteps: int) -> torch.Tensor:
    """beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999), for t = 0..T-1."""
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = cosine_alpha_bar(u)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


class NoiseSchedule(nn.Module):
    """A variance-preserving schedule over timesteps t = 0..T-1.

    Index t is the t+1-th noising step: `alphas_cumprod[t]` = prod_{s<=t} (1 - beta_s), so
    x_t at t = 0 is already (very slightly) noisy; samplers treat "t = -1" as clean (abar = 1).

    Attributes:
        alphas_cumprod: (T,) float64 on the CPU, the exact table; samplers read per-step
            coefficients from it as Python floats.
        sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: (T,) float32 buffers that follow
            the module's device, gathered per sample by `q_sample` and the conversions. Not
            persistent: they are rebuilt from the config, never stored in checkpoints.
    """

    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor

    def __init__(self, kind: ScheduleKind = "cosine", num_timesteps: int = 1000) -> None:
        super().__init__()
        if num_timesteps < 1:
            raise ConfigError("a noise schedule needs num_timesteps >= 1")
        if kind == "linear":
            betas = linear_betas(num_timesteps)
        elif kind == "cosine":
            betas = cosine_betas(num_timesteps)
        else:
            raise ConfigError(f"unknown noise schedule {kind!r}; choose one of: linear, cosine")
        self.kind = kind
        self.num_timesteps = num_timesteps
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.register_buffer(
            "sqrt_alphas_cumprod", self.alphas_cumprod.sqrt().float(), persistent=False
        )
        self.register_buffer(
            "sqrt_one_minus_alphas_cumprod",
            (1 - self.alphas_cumprod).sqrt().float(),
            persistent=False,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_timesteps={self.num_timesteps}"

    def alpha_bar(self, t: int) -> float:
        """abar_t as a Python float; t = -1 means clean (1.0)."""
        if not -1 <= t < self.num_timesteps:
            raise ValueError(f"timestep {t} outside -1..{self.num_timesteps - 1}")
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def _coefs(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) for each sample, shaped (B, 1, 1, ...) like x."""
        shape = (-1,) + (1,) * (x.dim() - 1)
        a = self.sqrt_alphas_cumprod[t].to(x.dtype).view(shape)
        s = self.sqrt_one_minus_alphas_cumprod[t].to(x.dtype).view(shape)
        return a, s

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t / (1 - abar_t) for each timestep in t (B,), float32 on the buffers' device
        (the model's), whatever device t is on."""
        t = t.to(self.sqrt_alphas_cumprod.device)
        return (self.sqrt_alphas_cumprod[t] / self.sqrt_one_minus_alphas_cumprod[t]) ** 2

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. eq. 4); t: (B,) int64."""
        a, s = self._coefs(t, x0)
        return a * x0 + s * eps

    def velocity(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho sec. 4)."""
        a, s = self._coefs(t, x0)
        return a * eps - s * x0

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t, x_t)
        return (x_t - s * eps) / a

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t, x_t)
        return (x_t - a * x0) / s

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t, x_t)
        return a * x_t - s * v

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t, x_t)
        return s * x_t + a * v

    def target(
        self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, prediction: Prediction
    ) -> torch.Tensor:
        """What a network of the given parametrisation should output for this (x0, eps, t)."""
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return x0
        if prediction == "v":
            return self.velocity(x0, eps, t)
        raise ConfigError(f"unknown prediction {prediction!r}; choose one of: eps, x0, v")

    def to_x0(
        self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor, prediction: Prediction
    ) -> torch.Tensor:
        """Convert a network output of the given parametrisation to a prediction of x0."""
        if prediction == "eps":
            return self.x0_from_eps(x_t, t, output)
        if prediction == "x0":
            return output
        if prediction == "v":
            return self.x0_from_v(x_t, t, output)
        raise ConfigError(f"unknown prediction {prediction!r}; choose one of: eps, x0, v")
