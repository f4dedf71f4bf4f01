"""Tiny CLI training runs shared by the test suites (tests/ is on sys.path: its conftest.py).

A DCGAN that trains a step in milliseconds on the synthetic dataset. The dcgan preset
compiles its networks; tiny runs skip it (tests/unit/test_train.py tests compiling).
"""

from __future__ import annotations


def sets(*overrides: str) -> list[str]:
    """`--set` arguments for each `key=value`."""
    return [arg for override in overrides for arg in ("--set", override)]


TINY_DCGAN = sets(
    "train.compile=false",
    "model.g_width=8",
    "model.d_width=8",
    "model.latent_dim=8",
    "train.batch_size=32",
    "train.num_grid_samples=16",
    "train.use_tensorboard=false",
)
# Three steps on the synthetic dataset, quietly: a run to sample, score or synthesise from.
THREE_STEPS = [*TINY_DCGAN, "--data", "synthetic", "--max-steps", "3", "--no-progress"]
