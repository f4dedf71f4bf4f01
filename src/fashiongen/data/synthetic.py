"""A tiny labelled dataset drawn in code, for tests and demos that must not touch the disk.

Ten classes of simple, clearly distinct shapes (bars, boxes, discs, a ring, crosses, a
triangle, a frame, two dots) in white on black, each with a small random shift, scale and
brightness and a little pixel noise, from a fixed seed: the same call always gives the same
images. The default is 640 training and 160 test images of 1x28x28, like a small
Fashion-MNIST; shapes are drawn directly at the requested size, so they stay sharp. The train
and test splits come from different random streams. Drawing is vectorised (numpy masks over a
coordinate grid) and takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fashiongen.data.dataset import ImageDataset

CLASS_NAMES = ("hbar", "vbar", "box", "disc", "ring", "plus", "cross", "triangle", "frame", "dots")
NATIVE_SIZE = 28
NUM_IMAGES = {"train": 640, "test": 160}
SPLIT_STREAM = {"train": 0, "test": 1}
SEED = 0
MAX_SHIFT = 0.12  # in units of half the image side
SCALE_RANGE = (0.85, 1.15)
BRIGHTNESS_RANGE = (0.7, 1.0)
NOISE_STD = 0.04  # in [0, 1] pixel units

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _two_dots(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((u - 0.4) ** 2 + v**2 < 0.25**2) | ((u + 0.4) ** 2 + v**2 < 0.25**2)


# Each shape is a boolean mask of coordinates u (right) and v (down) in about [-1, 1].
SHAPES: tuple[Mask, ...] = (
    lambda u, v: (np.abs(v) < 0.18) & (np.abs(u) < 0.75),
    lambda u, v: (np.abs(u) < 0.18) & (np.abs(v) < 0.75),
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) < 0.5,
    lambda u, v: u**2 + v**2 < 0.6**2,
    lambda u, v: (u**2 + v**2 > 0.4**2) & (u**2 + v**2 < 0.7**2),
    lambda u, v: (
        ((np.abs(u) < 0.15) & (np.abs(v) < 0.7)) | ((np.abs(v) < 0.15) & (np.abs(u) < 0.7))
    ),
    lambda u, v: (
        ((np.abs(u - v) < 0.22) | (np.abs(u + v) < 0.22))
        & (np.maximum(np.abs(u), np.abs(v)) < 0.65)
    ),
    lambda u, v: (v > -0.6) & (v < 0.6) & (np.abs(u) < (v + 0.6) * 0.6),
    lambda u, v: (
        (np.maximum(np.abs(u), np.abs(v)) < 0.7) & (np.maximum(np.abs(u), np.abs(v)) > 0.45)
    ),
    _two_dots,
)


def make_synthetic(
    split: str = "train",
    *,
    image_size: int | None = None,
    num_images: int | None = None,
    seed: int = SEED,
) -> ImageDataset:
    """Draw the synthetic dataset's split.

    Args:
        split: "train" or "test" (different random streams).
        image_size: side of the square images; default 28.
        num_images: default 640 for train, 160 for test; labels cycle through the classes.
        seed: the base seed; the same arguments always give the same images.

    Returns:
        uint8 (N, 1, S, S) images, white shapes on black, and balanced int64 labels.
    """
    size = image_size or NATIVE_SIZE
    n = NUM_IMAGES[split] if num_images is None else num_images
    rng = np.random.default_rng([seed, SPLIT_STREAM[split]])
    labels = np.arange(n) % len(CLASS_NAMES)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(n, 2, 1, 1)).astype(np.float32)
    scale = rng.uniform(*SCALE_RANGE, size=(n, 1, 1)).astype(np.float32)
    brightness = rng.uniform(*BRIGHTNESS_RANGE, size=(n, 1, 1)).astype(np.float32)
    noise = rng.normal(0.0, NOISE_STD, size=(n, size, size)).astype(np.float32)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # pixel centres
    pictures = np.zeros((n, size, size), dtype=np.float32)
    for label, shape in enumerate(SHAPES):
        idx = np.flatnonzero(labels == label)
        u = (coords[None, None, :] - shift[idx, 0]) / scale[idx]  # (n_k, 1, S)
        v = (coords[None, :, None] - shift[idx, 1]) / scale[idx]  # (n_k, S, 1)
        pictures[idx] = shape(u, v) * brightness[idx]
    pixels = np.clip(pictures + noise, 0.0, 1.0) * 255
    images = torch.from_numpy(np.rint(pixels).astype(np.uint8)).unsqueeze(1)
    return ImageDataset(
        images=images,
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASS_NAMES),
        name="synthetic",
        split=split,
        source=f"generated in code (seed {seed})",
    )
