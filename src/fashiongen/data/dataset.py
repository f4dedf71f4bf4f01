"""The in-memory dataset every loader returns, and the conversions between image shapes.

A split is held whole as one uint8 (N, C, H, W) tensor with int64 labels: Fashion-MNIST's
60,000 training images are 47 MB, so batches are plain index operations and no DataLoader
workers are needed. `convert_images` brings any dataset to a requested size (Pillow; LANCZOS
when shrinking, bilinear when enlarging) and channel count (grey repeated to RGB; RGB to
grey by the ITU-R 601-2 luma, as Pillow's "L" mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from fashiongen.errors import DataError

NUM_LEVELS = 256  # uint8 pixel values
LUMA_WEIGHTS = (299, 587, 114)  # ITU-R 601-2, in thousandths, as Pillow's RGB -> L
GREY, RGB = 1, 3


@dataclass
class ImageDataset:
    """One split of a labelled image dataset, held in memory.

    Attributes:
        images: uint8 (N, C, H, W) in [0, 255].
        labels: int64 (N,) in [0, len(class_names)).
        class_names: one name per label.
        name: "fashion-mnist", "mnist", "synthetic" or "folder:/abs/path".
        split: "train" or "test".
        source: where the data came from (a directory or URL), for people to read.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str
    split: str
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 ({len(self.images)},), got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)


def convert_images(
    images: torch.Tensor, image_size: int | None = None, channels: int | None = None
) -> torch.Tensor:
    """Resize and convert uint8 (N, C, H, W) images; None keeps the current size or channels.

    Args:
        images: uint8 (N, C, H, W) with C in {1, 3}.
        image_size: side of the square output; non-square images are centre-cropped first.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        uint8 (N, channels, image_size, image_size); `images` itself when nothing changes.
    """
    if channels == GREY and images.shape[1] == RGB:
        images = rgb_to_grey(images)
    if image_size is not None and images.shape[2:] != (image_size, image_size):
        images = _resize_all(images, image_size)
    if channels == RGB and images.shape[1] == GREY:
        images = images.expand(-1, RGB, -1, -1).contiguous()
    return images


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 1, H, W) by the ITU-R 601-2 luma, rounded."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.int32).view(1, RGB, 1, 1)
    luma = (images.to(torch.int32) * weights).sum(dim=1, keepdim=True)
    return ((luma + 500) // 1000).to(torch.uint8)


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize a PIL image to (width, height): LANCZOS when shrinking, bilinear when enlarging.

    A non-square image going to a square size is centre-cropped to a square first, so
    nothing is stretched.
    """
    width, height = image.size
    if size[0] == size[1] and width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size == size:
        return image
    shrinking = size[0] * size[1] < image.size[0] * image.size[1]
    resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BILINEAR
    return image.resize(size, resample)


def _resize_all(images: torch.Tensor, image_size: int) -> torch.Tensor:
    n, c = images.shape[:2]
    pictures = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) for Pillow
    out = np.empty((n, image_size, image_size, c), dtype=np.uint8)
    for i in range(n):
        picture = pictures[i, ..., 0] if c == GREY else pictures[i]
        resized = np.asarray(resize_image(Image.fromarray(picture), (image_size, image_size)))
        out[i] = resized.reshape(image_size, image_size, c)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def dataset_info(ds: ImageDataset) -> dict[str, Any]:
    """Summary of a dataset, JSON-serialisable.

    Returns:
        name, split, source, count, shape [C, H, W], class_counts {class name: count}, and
        pixel_mean / pixel_std over all pixels and channels, in [0, 1] units.
    """
    counts = torch.bincount(ds.labels, minlength=len(ds.class_names)).tolist()
    histogram = torch.bincount(ds.images.reshape(-1), minlength=NUM_LEVELS).double()
    levels = torch.arange(NUM_LEVELS, dtype=torch.float64) / (NUM_LEVELS - 1)
    total = histogram.sum().clamp(min=1)
    mean = float((histogram * levels).sum() / total)
    var = float((histogram * levels**2).sum() / total) - mean**2
    return {
        "name": ds.name,
        "split": ds.split,
        "source": ds.source,
        "count": len(ds),
        "shape": list(ds.image_shape),
        "class_counts": dict(zip(ds.class_names, counts, strict=False)),
        "pixel_mean": mean,
        "pixel_std": max(var, 0.0) ** 0.5,
    }


def check_shape_args(image_size: int | None, channels: int | None) -> None:
    """Raise DataError unless image_size is None or positive and channels is None, 1 or 3."""
    if image_size is not None and (
        not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1
    ):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (None, GREY, RGB):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
