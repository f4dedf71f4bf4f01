"""The synthetic dataset: shapes, balance, determinism, distinct classes, speed."""

from __future__ import annotations

import time

import pytest
import torch

from fashiongen.data import load_dataset
from fashiongen.data.synthetic import CLASS_NAMES, make_synthetic


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


def test_fast() -> None:
    start = time.perf_counter()
    load_dataset("synthetic")
    load_dataset("synthetic", "test", image_size=64, channels=3)
    assert time.perf_counter() - start < 0.5
