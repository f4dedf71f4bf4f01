"""A high-frequency artefact diagnostic a person can read: the mean absolute Laplacian.

The 4-neighbour Laplacian responds to pixel-to-pixel changes, so its mean absolute value
(pixels in [0, 1], zero padding: the black background) rises with speckle, salt-and-pepper
noise and checkerboards and falls with blur. Divided by the same of the real reference
images, ~1 means real sharpness, above 1 excess high-frequency energy (noise, speckle),
below 1 blur. It is computed on the featnet-shaped 1x28x28 uint8 images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
BATCH_SIZE = 4096


@torch.no_grad()
def mean_abs_laplacian(images: torch.Tensor) -> float:
    """Mean |Laplacian| of uint8 (N, 1, H, W) images, pixels scaled to [0, 1]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise TypeError("mean_abs_laplacian expects uint8 (N, 1, H, W) images")
    if len(images) == 0:
        raise ValueError("mean_abs_laplacian needs at least one image")
    total = 0.0
    for start in range(0, len(images), BATCH_SIZE):
        x = images[start : start + BATCH_SIZE].float().div_(255)
        total += float(F.conv2d(x, LAPLACIAN, padding=1).abs().sum(dtype=torch.float64))
    return total / images.numel()
