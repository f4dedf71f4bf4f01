"""Image range conversions and grids, at the boundaries between data, models and files.

Models see float images in [-1, 1]; datasets, files and metrics see uint8 in [0, 255].
The conversions are named for what they return, so a range mix-up reads wrong.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashiongen.files import atomic_path


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float (N, C, H, W) in [-1, 1] (clamped) -> uint8 in [0, 255], on the CPU."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def make_grid(
    images: torch.Tensor, num_rows: int | None = None, padding: int = 2, pad_value: int = 255
) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 picture (rows*H', cols*W', C), row-major.

    `num_rows` defaults to a square-ish grid; e.g. one row per class for per-class grids.
    """
    if images.dtype != torch.uint8:
        raise TypeError("make_grid expects uint8 images; convert with to_uint8 first")
    n, c, h, w = images.shape
    rows = num_rows or max(1, int(math.floor(math.sqrt(n))))
    cols = math.ceil(n / rows)
    grid = np.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, c),
        pad_value,
        dtype=np.uint8,
    )
    array = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = array[i]
    return grid


def to_pil(picture: np.ndarray, scale: int = 1) -> Image.Image:
    """(H, W, C) uint8 -> PIL image, grey or RGB, enlarged by `scale` with nearest neighbours."""
    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_grid(
    path: str | Path,
    images: torch.Tensor,
    num_rows: int | None = None,
    scale: int = 2,
    *,
    overwrite: bool = True,
) -> Path:
    """Save uint8 (N, C, H, W) images as one grid PNG, written atomically (an existing file is
    refused unless `overwrite`)."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        to_pil(make_grid(images, num_rows), scale).save(tmp, format="PNG")
    return path
