"""`load_dataset` and friends: names, shape conversion, config, summaries, the real dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashiongen.config import DataConfig
from fashiongen.data import DATASETS, ImageDataset, dataset_info, load_dataset, load_from_config
from fashiongen.data.dataset import convert_images, rgb_to_grey
from fashiongen.data.sources import write_idx_split
from fashiongen.errors import DataError

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A 28x28 MNIST-like dataset: 20 train images (a bright square on black), 10 test."""
    for split, n in (("train", 20), ("test", 10)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 8:20, 8:20] = 200
        write_idx_split(tmp_path, split, images, np.arange(n) % 10)
    return tmp_path


def test_dataset_names() -> None:
    assert DATASETS == ("fashion-mnist", "mnist", "synthetic")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'"),
        ({"name": "synthetic", "split": "val"}, "unknown split"),
        ({"name": "synthetic", "image_size": 0}, "image_size"),
        ({"name": "synthetic", "channels": 2}, "channels"),
    ],
)
def test_bad_arguments(kwargs: dict, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        load_dataset(**kwargs)


@pytest.mark.parametrize(("image_size", "channels"), [(None, None), (32, None), (64, 3), (14, 1)])
def test_idx_dataset_conversions(
    idx_dir: Path, image_size: int | None, channels: int | None
) -> None:
    ds = load_dataset("mnist", "test", data_dir=idx_dir, image_size=image_size, channels=channels)
    size = image_size or 28
    assert ds.images.shape == (10, channels or 1, size, size)
    assert ds.images.dtype == torch.uint8
    centre = ds.images[:, :, size // 2, size // 2].int()
    assert (centre - 200).abs().max() <= 3  # LANCZOS rings slightly near edges
    assert (ds.images[:, :, 0, 0] == 0).all()


def test_convert_round_trip_and_identity() -> None:
    images = torch.randint(0, 256, (3, 1, 10, 10), dtype=torch.uint8)
    assert convert_images(images) is images
    rgb = convert_images(images, channels=3)
    assert rgb.shape == (3, 3, 10, 10)
    assert rgb.is_contiguous()
    assert torch.equal(convert_images(rgb, channels=1), images)
    assert torch.equal(convert_images(images, image_size=10), images)


def test_rgb_to_grey_matches_pillow() -> None:
    picture = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(picture).convert("L"))
    grey = rgb_to_grey(torch.from_numpy(picture).permute(2, 0, 1)[None])[0, 0].numpy()
    assert np.abs(grey.astype(int) - expected).max() <= 1


def test_downscale_is_antialiased() -> None:
    stripes = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    stripes[..., ::2] = 255  # one-pixel stripes average to mid grey when shrunk 4x
    small = convert_images(stripes, image_size=16).float()
    assert small[..., 2:-2, 2:-2].sub(127.5).abs().max() < 16


def test_load_from_config() -> None:
    ds = load_from_config(DataConfig(name="synthetic", image_size=32, channels=3), "test")
    assert ds.image_shape == (3, 32, 32)
    assert ds.split == "test"


def test_load_from_config_passes_data_dir(idx_dir: Path) -> None:
    ds = load_from_config(DataConfig(name="mnist", data_dir=str(idx_dir)))
    assert len(ds) == 20
    assert ds.source == str(idx_dir)


def test_dataset_info(idx_dir: Path) -> None:
    info = dataset_info(load_dataset("mnist", data_dir=idx_dir))
    assert json.loads(json.dumps(info)) == info
    assert info["name"] == "mnist"
    assert info["split"] == "train"
    assert info["count"] == 20
    assert info["shape"] == [1, 28, 28]
    assert info["class_counts"] == {str(d): 2 for d in range(10)}
    fraction = 144 / 784  # the 12x12 square
    assert info["pixel_mean"] == pytest.approx(fraction * 200 / 255)
    variance = fraction * (200 / 255) ** 2 - info["pixel_mean"] ** 2
    assert info["pixel_std"] == pytest.approx(variance**0.5)


def test_image_dataset_rejects_bad_tensors() -> None:
    labels = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), labels, ["a"], "x", "train", "here")
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8), labels[:1], ["a"], "x", "train", "here"
        )


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    start = time.perf_counter()
    train = load_dataset("fashion-mnist", "train", data_dir=REAL_FASHION_MNIST, download=False)
    seconds = time.perf_counter() - start
    test = load_dataset("fashion-mnist", "test", data_dir=REAL_FASHION_MNIST, download=False)
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.class_names == FASHION_CLASSES
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    info = dataset_info(train)
    assert info["pixel_mean"] == pytest.approx(0.2860, abs=1e-3)
    assert info["pixel_std"] == pytest.approx(0.3530, abs=1e-3)
    assert seconds < 5  # about one second when the machine is idle
