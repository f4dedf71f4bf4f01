"""Shared fixtures: tiny configs and the synthetic dataset, so unit tests run in seconds."""

from __future__ import annotations

import os

import pytest
import torch

from fashiongen import precision
from fashiongen.config import RunConfig, config_from_dict


def pytest_configure(config):
    # Tiny tensors: more threads only add contention (and module fixtures run before any
    # function-scoped fixture could set this).
    torch.set_num_threads(1)
    # precision=auto decides by a timing probe on machines with bf16 units: two models of
    # different configs could then sample in different precisions, and the probes' verdicts
    # would land in the user's cache. The suite runs as on a machine without bf16 units
    # (auto = fp32, no probe); tests/unit/test_precision.py sets its own simulations, and
    # precision="bf16" stays available to tests that ask for it.
    os.environ.setdefault(precision.SIMULATE_ENV, "no-bf16-units")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)


def tiny_config(tmp_path, model: str | dict = "dcgan", **sections) -> RunConfig:
    """A config that trains in about a second on the synthetic dataset.

    `model` is a family name or a whole [model] table; other sections update the defaults.
    """
    data = {
        "seed": 0,
        "out_dir": str(tmp_path / "run"),
        "model": {"name": model} if isinstance(model, str) else dict(model),
        "data": {"name": "synthetic"},
        "train": {
            "epochs": 1,
            "batch_size": 32,
            "log_every_n_steps": 5,
            "checkpoint_every_n_steps": 10,
            "num_grid_samples": 16,
            "use_tensorboard": False,
        },
        "sample": {"num_steps": 4},
    }
    for key, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(key, {}).update(values)
        else:
            data[key] = values
    return config_from_dict(data)


@pytest.fixture
def make_config(tmp_path):
    return lambda model="dcgan", **sections: tiny_config(tmp_path, model, **sections)


@pytest.fixture
def fake_featnet(monkeypatch, tmp_path):
    """An untrained feature net for the synthetic classes, as `load_featnet` returns it, and a
    fresh cache: eval / compare plumbing on synthetic data in seconds (numbers meaningless)."""
    from fashiongen.data.synthetic import CLASS_NAMES
    from fashiongen.nets.featnet import FeatNet

    torch.manual_seed(0)
    net = FeatNet(len(CLASS_NAMES)).eval()
    net.class_names = list(CLASS_NAMES)
    monkeypatch.setattr("fashiongen.nets.featnet.load_featnet", lambda name: net)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return net
