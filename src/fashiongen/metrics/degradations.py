"""Controlled degradations of real images: the rungs of the metric calibration ladder.

Each function takes uint8 (N, 1, H, W) images and a strength and returns uint8 images of the
same shape, reproducibly given `generator`. They mimic the failure modes of the families
shipped here: pixel noise (Gaussian, multiplicative speckle, salt-and-pepper) for MLP GANs,
checkerboards for transposed convolutions, blur for VAEs, quantisation (JPEG blocks, fewer
grey levels), contrast and brightness shifts, and, for the set as a whole, intra-class
collapse and class imbalance. `benchmarks/calibrate_metrics.py` scores them at 3-4 strengths
each; the unit tests check that FID rises with the strength.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _per_image(images: torch.Tensor, transform) -> torch.Tensor:
    """Apply a PIL image -> PIL image function to every (1, H, W) uint8 image."""
    out = np.stack([np.asarray(transform(Image.fromarray(image[0].numpy()))) for image in images])
    return torch.from_numpy(out).unsqueeze(1)


def gaussian_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Plus N(0, sigma^2) noise in [0, 1] pixel units, clipped."""
    x = _to_unit(images)
    return _to_uint8(x + torch.randn(x.shape, generator=generator) * sigma)


def speckle(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative noise x (1 + sigma n), n ~ N(0, 1): grain on the garment, none on the
    black background."""
    x = _to_unit(images)
    return _to_uint8(x * (1 + torch.randn(x.shape, generator=generator) * sigma))


def salt_and_pepper(images: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A `share` of the pixels set to black or white at random."""
    x = _to_unit(images)
    hit = torch.rand(x.shape, generator=generator) < share
    white = (torch.rand(x.shape, generator=generator) < 0.5).float()
    return _to_uint8(torch.where(hit, white, x))


def blur(
    images: torch.Tensor, radius: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pillow's Gaussian blur of the given radius (pixels)."""
    return _per_image(images, lambda image: image.filter(ImageFilter.GaussianBlur(radius)))


def checkerboard(
    images: torch.Tensor, amplitude: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Plus +/- `amplitude` alternating pixel by pixel: the transposed-convolution artefact."""
    h, w = images.shape[-2:]
    pattern = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2) * 2.0 - 1.0
    return _to_uint8(_to_unit(images) + amplitude * pattern)


def jpeg(
    images: torch.Tensor, quality: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A round trip through JPEG at `quality` (1-95): 8x8 block quantisation."""

    def round_trip(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(quality))
        return Image.open(buffer)

    return _per_image(images, round_trip)


def posterise(
    images: torch.Tensor, levels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Grey values rounded to `levels` evenly spaced levels (>= 2)."""
    steps = int(levels) - 1
    return _to_uint8((_to_unit(images) * steps).round() / steps)


def contrast(
    images: torch.Tensor, factor: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Contrast scaled by `factor` around mid-grey (factor < 1: greyer, flatter images)."""
    return _to_uint8(0.5 + (_to_unit(images) - 0.5) * factor)


def brightness(
    images: torch.Tensor, shift: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Plus `shift` in [0, 1] pixel units, clipped."""
    return _to_uint8(_to_unit(images) + shift)


def collapse_per_class(images: torch.Tensor, labels: torch.Tensor, distinct: int) -> torch.Tensor:
    """Each class's images replaced by its first `distinct` ones, in turn (labels unchanged)."""
    out = images.clone()
    for c in labels.unique():
        rows = torch.nonzero(labels == c).flatten()
        out[rows] = images[rows[torch.arange(len(rows)) % distinct]]
    return out


def imbalanced_indices(
    labels: torch.Tensor, num: int, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """`num` indices whose class shares fall geometrically from the first class to the
    last by `ratio` (most frequent / least frequent), drawn without replacement."""
    num_classes = int(labels.max()) + 1
    weights = float(ratio) ** (
        -torch.arange(num_classes, dtype=torch.float64) / max(num_classes - 1, 1)
    )
    counts = (weights / weights.sum() * num).round().long()
    counts[0] += num - int(counts.sum())  # rounding: exactly `num` in all
    order = torch.randperm(len(labels), generator=generator)
    return torch.cat([order[labels[order] == c][: int(counts[c])] for c in range(num_classes)])
