"""Diffusion samplers and noise schedules, independent of any network or family.

A sampler is a plain function `sample_fn(denoise, x_start, schedule, *, num_steps, t_start,
eta, generator, callback) -> x0` of a denoise fn `(x_t, t) -> x0_pred`, k-diffusion style
(Karras et al., arXiv 2206.00364), so each one works for every diffusion family and is tested
with an oracle denoiser. They are written here by hand rather than taken from diffusers'
schedulers because diffusers is a large dependency (and a hub client) for ~100 lines of
arithmetic, and its scheduler objects keep per-run state that a plain function does not need.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fashiongen.errors import ConfigError
from fashiongen.samplers.sampling import (
    Callback,
    Denoiser,
    ancestral,
    ancestral_walk,
    ddim,
    ddim_walk,
    dpmpp_2m,
    dpmpp_2m_walk,
    timesteps,
)
from fashiongen.samplers.schedules import NoiseSchedule

Sampler = Callable[..., torch.Tensor]

SAMPLERS: dict[str, Sampler] = {"ancestral": ancestral, "ddim": ddim, "dpmpp_2m": dpmpp_2m}
# The same samplers walking an explicit stretch of timesteps, `walk(denoise, x, schedule, ts,
# t_end, *, eta, generator, callback)`: a segment of a grid (distillation's teacher).
WALKS: dict[str, Sampler] = {
    "ancestral": ancestral_walk,
    "ddim": ddim_walk,
    "dpmpp_2m": dpmpp_2m_walk,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered as `name`; an unknown name raises ConfigError listing the choices."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def get_walk(name: str) -> Sampler:
    """The segment walker of sampler `name` (see `WALKS`)."""
    get_sampler(name)
    return WALKS[name]


__all__ = [
    "SAMPLERS",
    "WALKS",
    "Callback",
    "Denoiser",
    "NoiseSchedule",
    "Sampler",
    "ancestral",
    "ddim",
    "dpmpp_2m",
    "get_sampler",
    "get_walk",
    "timesteps",
]
