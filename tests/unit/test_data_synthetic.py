"""The synthetic dataset: shapes, balance, determinism, distinct classes, drawn in memory."""

from __future__ import annotations

import builtins
import io
import os

import numpy as np
import pytest
import torch

from fashiongen.data import load_dataset, synthetic
from fashiongen.data.synthetic import CLASS_NAMES, SHAPES, make_synthetic


@pytest.mark.parametrize(("split", "count"), [("train", 640), ("test", 160)])
def test_default_shape_and_balance(split: str, count: int) -> None:
    ds = load_dataset("synthetic", split)
    assert ds.images.shape == (count, 1, 28, 28)
    assert ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels).tolist() == [count // 10] * 10
    assert ds.class_names == list(CLASS_NAMES)
    assert (ds.name, ds.split) == ("synthetic", split)


def test_deterministic_and_splits_differ() -> None:
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    test = load_dataset("synthetic", "test")
    assert not torch.equal(a.images[:160], test.images)
    assert not torch.equal(make_synthetic(seed=1).images, a.images)


def test_classes_are_distinct_and_images_vary() -> None:
    ds = load_dataset("synthetic")
    x = ds.images.float() / 255
    means = torch.stack([x[ds.labels == k].mean(0).flatten() for k in range(10)])
    distances = torch.cdist(means, means) + torch.eye(10) * 1e9
    assert distances.min() > 2.0  # class mean images are far apart (in 784-d pixel space)
    within = x[ds.labels == 3]
    assert (within - within.mean(0)).abs().mean() > 0.01  # jitter: no two copies identical
    assert x.mean() > 0.05  # shapes are drawn, not blank


@pytest.mark.parametrize(("image_size", "channels"), [(32, 1), (64, 3), (16, None)])
def test_honours_image_size_and_channels(image_size: int, channels: int | None) -> None:
    ds = load_dataset("synthetic", "test", image_size=image_size, channels=channels)
    assert ds.image_shape == (channels or 1, image_size, image_size)
    if channels == 3:
        assert torch.equal(ds.images[:, 0], ds.images[:, 2])


def test_drawn_in_memory_without_touching_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **_: object) -> None:
        raise AssertionError(f"the synthetic dataset opened {args[0]!r}")

    for module in (builtins, io):
        monkeypatch.setattr(module, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)
    load_dataset("synthetic")
    load_dataset("synthetic", "test", image_size=64, channels=3)


@pytest.mark.parametrize("num_images", [10, 640])
def test_drawing_is_vectorised(monkeypatch: pytest.MonkeyPatch, num_images: int) -> None:
    """Each class's shape is evaluated once, over all its images at once (what keeps the
    dataset milliseconds to draw), whatever the number of images."""
    calls = []

    def counted(shape: synthetic.Mask) -> synthetic.Mask:
        def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            calls.append(u.shape[0])
            return shape(u, v)

        return mask

    expected = make_synthetic(num_images=num_images)
    monkeypatch.setattr(synthetic, "SHAPES", tuple(counted(shape) for shape in SHAPES))
    drawn = make_synthetic(num_images=num_images)
    assert len(calls) == len(SHAPES) and sum(calls) == num_images
    assert torch.equal(drawn.images, expected.images)
