"""Memorisation: how close each generated image lies to its nearest training image, in pixels.

A model that copies its training set scores well on FID yet has learnt nothing. Following
the nearest-neighbour copy detection of Carlini et al. (arXiv 2301.13188) and the data-copying
test of Meehan et al. (arXiv 2004.05675), we measure each sample's Euclidean distance to its
nearest training image in pixel space (pixels scaled to [0, 1], so a 28x28 distance lies in
[0, 28]) and calibrate with real data: the copy threshold is the 1st percentile of the
distances from the real test images to the training set, and the copy rate is the share of
samples closer than that (or exactly equal to a training image). Real held-out images thus
have a copy rate of about 1%. The search is a chunked float32 matrix product followed by an
exact float64 re-ranking of the best few candidates, so exact copies give exactly 0.
"""

from __future__ import annotations

import numpy as np
import torch

COPY_PERCENTILE = 1.0  # of real test-to-train nearest distances
NUM_CANDIDATES = 8  # re-ranked exactly after the float32 search
CHUNK_ELEMENTS = 1 << 24  # distance-matrix entries per chunk (64 MB of float32)


def _flat_unit(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8:
        raise TypeError("memorisation compares uint8 images; convert with to_uint8 first")
    return images.reshape(len(images), -1).float().div_(255.0)


def nearest_train_distances(samples: torch.Tensor, train: torch.Tensor) -> np.ndarray:
    """Pixel-space L2 distance (pixels in [0, 1]) from each sample to its nearest train image.

    Args:
        samples: uint8 (N, C, H, W).
        train: uint8 (M, C, H, W) of the same (C, H, W).

    Returns:
        float64 (N,).
    """
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"sample shape {tuple(samples.shape[1:])} != training image shape "
            f"{tuple(train.shape[1:])}"
        )
    a, b = _flat_unit(samples), _flat_unit(train)
    b_sq = (b * b).sum(1)
    num_candidates = min(NUM_CANDIDATES, len(b))
    rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, len(b)))
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), rows_per_chunk):
        chunk = a[start : start + rows_per_chunk]
        approx = b_sq[None, :] - 2 * chunk @ b.T  # ||a - b||^2 - ||a||^2
        candidates = approx.topk(num_candidates, dim=1, largest=False).indices
        diff = chunk.double()[:, None, :] - b[candidates].double()  # (rows, candidates, pixels)
        exact = diff.pow_(2).sum(-1).min(1).values.sqrt_()
        out[start : start + len(chunk)] = exact.numpy()
    return out


def copy_threshold(reference_distances: np.ndarray, percentile: float = COPY_PERCENTILE) -> float:
    """The `percentile`-th percentile of real held-out-to-train nearest distances."""
    return float(np.percentile(np.asarray(reference_distances, dtype=np.float64), percentile))


def copy_rate(distances: np.ndarray, threshold: float) -> float:
    """Share of samples closer than `threshold` to a training image, or identical to one."""
    d = np.asarray(distances, dtype=np.float64)
    if len(d) == 0:
        return 0.0
    return float(((d < threshold) | (d == 0)).mean())


def memorisation_metrics(samples: torch.Tensor, train: torch.Tensor, threshold: float) -> dict:
    """Median nearest-train distance, copy rate and the threshold used."""
    distances = nearest_train_distances(samples, train)
    return {
        "nn_train_distance_median": float(np.median(distances)) if len(distances) else None,
        "copy_rate": copy_rate(distances, threshold),
        "copy_threshold": threshold,
    }
