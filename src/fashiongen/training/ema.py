"""Exponential moving average of the sampling networks' weights (the EMA that grids,
checkpoints and sampling use; Polyak averaging as in DDPM, arXiv 2006.11239, with the
optional warm-up of the decay that EDM and diffusers use). The EMA is a plain dict of
state-dict tensors, empty when `train.ema_decay` is 0."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fashiongen.config import TrainConfig
from fashiongen.models.base import Family


def ema_keys(model: Family) -> list[str]:
    """State-dict keys of the sampling networks whose EMA is kept."""
    prefixes = tuple(f"{name}." for name in model.ema_module_names)
    return [k for k in model.state_dict() if k.startswith(prefixes)]


def init_ema(model: Family, decay: float) -> dict[str, torch.Tensor]:
    """A copy of the sampling networks' current tensors (none when `decay` is 0)."""
    if decay <= 0:
        return {}
    state = model.state_dict()
    return {k: state[k].detach().clone() for k in ema_keys(model)}


def ema_decay_at(train_cfg: TrainConfig, step: int) -> float:
    """The EMA decay used after step `step` (0-based): `ema_decay`, warmed up if asked."""
    if train_cfg.use_ema_warmup:
        return min(train_cfg.ema_decay, (1 + step) / (10 + step))
    return train_cfg.ema_decay


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: Family, decay: float) -> None:
    """Floating tensors move towards the model's by (1 - decay); others (BN counts) copy."""
    if not ema:
        return
    state = model.state_dict()
    floats = [k for k in ema if ema[k].is_floating_point()]
    torch._foreach_lerp_([ema[k] for k in floats], [state[k] for k in floats], 1.0 - decay)
    for k in ema.keys() - set(floats):
        ema[k].copy_(state[k])


@contextlib.contextmanager
def ema_weights(model: Family, ema: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily load the EMA weights (for sampling grids), restoring the live ones after."""
    if not ema:
        yield
        return
    live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in ema}
    model.load_state_dict(ema, strict=False)
    try:
        yield
    finally:
        model.load_state_dict(live, strict=False)
