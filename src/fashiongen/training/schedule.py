"""The learning-rate schedule: a linear warm-up, then a constant rate or a cosine decay to
`train.min_lr_ratio` (SGDR's cosine without restarts, arXiv 1608.03983), as a factor of each
optimizer param group's base rate. The base rates live in `LearningRates`, beside the
optimizers rather than inside their param groups, and travel in the training state."""

from __future__ import annotations

import math
from typing import Any

import torch

from fashiongen.config import TrainConfig

LEGACY_BASE_LR_KEY = "base_lr"  # where checkpoints before `LearningRates` kept a group's base

Optimizers = dict[str, torch.optim.Optimizer]


def lr_factor_at(train_cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning-rate multiplier for step `step` (0-based) of `total_steps`: a linear
    warm-up, then constant or a cosine down to `train_cfg.min_lr_ratio`."""
    warmup = train_cfg.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if train_cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    floor = train_cfg.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def uses_schedule(train_cfg: TrainConfig) -> bool:
    """Whether the rates change during the run (a constant rate is never rewritten)."""
    return train_cfg.lr_schedule != "constant" or train_cfg.warmup_steps > 0


class LearningRates:
    """Each param group's base rate (its configured rate, lowered by every rollback); a
    group's rate is its base times the schedule's factor."""

    def __init__(self, optimizers: Optimizers) -> None:
        self.optimizers = optimizers
        self.base = {
            name: [group["lr"] for group in opt.param_groups] for name, opt in optimizers.items()
        }

    def _groups(self) -> list[tuple[dict[str, Any], list[float], int]]:
        return [
            (group, self.base[name], i)
            for name, opt in self.optimizers.items()
            for i, group in enumerate(opt.param_groups)
        ]

    def set_factor(self, factor: float) -> None:
        """Every group's rate = its base rate x `factor`."""
        for group, base, i in self._groups():
            group["lr"] = base[i] * factor

    def scale(self, factor: float) -> None:
        """Multiply the rates and their bases by `factor` (a rollback's lowering)."""
        for group, base, i in self._groups():
            group["lr"] *= factor
            base[i] *= factor

    def state_dict(self) -> dict[str, list[float]]:
        return {name: list(rates) for name, rates in self.base.items()}

    def load_state_dict(self, saved: dict[str, list[float]] | None) -> None:
        """After the optimizers' own state is restored: the base rates a checkpoint saved
        (`saved`); for older checkpoints, the `base_lr` each param group carried (taken out
        of the group), or else the group's restored rate."""
        for name, opt in self.optimizers.items():
            for i, group in enumerate(opt.param_groups):
                legacy = group.pop(LEGACY_BASE_LR_KEY, group["lr"])
                self.base[name][i] = float(saved[name][i]) if saved else legacy
