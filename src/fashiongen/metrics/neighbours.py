"""k-nearest-neighbour metrics of fidelity and diversity: precision/recall and density/coverage.

Improved precision and recall (Kynkäänniemi et al., arXiv 1904.06991) approximate each
manifold by the union of balls reaching every sample's k-th nearest neighbour: precision is
the share of fake samples inside the real manifold, recall the share of real samples inside
the fake one. Density and coverage (Naeem et al., arXiv 2002.09797) use only the real balls,
which makes them robust to outliers among the fakes: density counts how many real balls hold
each fake (about 1 when the sets match, unbounded above), coverage is the share of real balls
holding at least one fake. Distances are computed in torch in row chunks, so 10k x 10k
feature sets need a few hundred MB at most and a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

CHUNK_ELEMENTS = 1 << 24  # distance-matrix entries per chunk (64 MB of float32)


def as_features(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, D) features as a float32 CPU tensor; ValueError for another rank."""
    t = torch.as_tensor(x).detach().cpu().float()
    if t.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(t.shape)}")
    return t


def distance_chunks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, Euclidean distances (len(rows), len(b))) over row chunks of `a`."""
    rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, len(a)))
        yield rows, torch.cdist(a[rows], b)


def neighbour_radii(x: np.ndarray | torch.Tensor, ks: Iterable[int]) -> dict[int, torch.Tensor]:
    """Distance from each row of `x` to its k-th nearest other row, for every k in `ks` in
    one pass over the distances: {k: float32 (N,)}."""
    x = as_features(x)
    ks = sorted(set(ks))
    if not ks or not 1 <= ks[0] <= ks[-1] < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} samples, got {ks}")
    radii = {k: torch.empty(len(x)) for k in ks}
    for rows, d in distance_chunks(x, x):
        # k + 1 smallest include the point itself at distance 0
        nearest = d.topk(ks[-1] + 1, dim=1, largest=False).values
        for k in ks:
            radii[k][rows] = nearest[:, k]
    return radii


def kth_neighbour_distances(x: np.ndarray | torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of `x` to its k-th nearest other row, float32 (N,)."""
    return neighbour_radii(x, (k,))[k]


def mean_pairwise_distance(x: np.ndarray | torch.Tensor) -> float:
    """Mean Euclidean distance between distinct rows (over the N (N - 1) ordered pairs), the
    chunks' float32 distances summed in float64."""
    x = as_features(x)
    if len(x) < 2:
        raise ValueError(f"a mean pairwise distance needs two samples, got {len(x)}")
    total = 0.0
    for _, d in distance_chunks(x, x):
        total += float(d.sum(dtype=torch.float64))
    return total / (len(x) * (len(x) - 1))


def _share_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` within distance radii[i] of some centre i (balls closed, <=)."""
    inside = torch.zeros(len(points), dtype=torch.bool)
    for rows, d in distance_chunks(points, centres):
        inside[rows] = (d <= radii[None, :]).any(1)
    return float(inside.double().mean())


def precision_recall(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = 3,
    *,
    real_radii: np.ndarray | torch.Tensor | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., arXiv 1904.06991, eq. 1-2).

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.
        k: neighbourhood size for the manifold radii (paper default 3).
        real_radii: precomputed `kth_neighbour_distances(real, k)`, to reuse across calls.

    Returns:
        (precision, recall), each in [0, 1].
    """
    real, fake = as_features(real), as_features(fake)
    radii = (
        kth_neighbour_distances(real, k)
        if real_radii is None
        else torch.as_tensor(real_radii).float()
    )
    precision = _share_inside(fake, real, radii)
    recall = _share_inside(real, fake, kth_neighbour_distances(fake, k))
    return precision, recall


def density_coverage(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = 5,
    *,
    real_radii: np.ndarray | torch.Tensor | None = None,
) -> tuple[float, float]:
    """Density and coverage (Naeem et al., arXiv 2002.09797, eq. 3-4; balls open, <).

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.
        k: neighbourhood size (paper default 5).
        real_radii: precomputed `kth_neighbour_distances(real, k)`, to reuse across calls.

    Returns:
        (density, coverage); density is about 1 for matching sets, coverage in [0, 1].
    """
    real, fake = as_features(real), as_features(fake)
    radii = (
        kth_neighbour_distances(real, k)
        if real_radii is None
        else torch.as_tensor(real_radii).float()
    )
    balls_per_fake = 0.0
    for _, d in distance_chunks(fake, real):
        balls_per_fake += float((d < radii[None, :]).sum())
    nearest_fake = torch.empty(len(real))
    for rows, d in distance_chunks(real, fake):
        nearest_fake[rows] = d.min(1).values
    density = balls_per_fake / (k * len(fake))
    coverage = float((nearest_fake < radii).double().mean())
    return density, coverage


def neighbour_metrics(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    *,
    k_precision: int = 3,
    k_density: int = 5,
    real_radii: dict[int, np.ndarray | torch.Tensor] | None = None,
) -> dict[str, float]:
    """Precision, recall, density and coverage in one pass over fake-to-real distances.

    Equals `precision_recall(real, fake, k_precision)` and `density_coverage(real, fake,
    k_density)` but computes each distance once: the fake-to-real matrix serves all four
    metrics (recall and coverage read it by columns), plus one fake-to-fake pass for the
    fake radii.

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.
        k_precision: k for precision and recall.
        k_density: k for density and coverage.
        real_radii: precomputed real radii by k (e.g. cached `ReferenceStats.radii`).

    Returns:
        {"precision", "recall", "density", "coverage"}.
    """
    real, fake = as_features(real), as_features(fake)
    radii = dict(real_radii or {})
    radii_pr, radii_dc = (
        torch.as_tensor(radii[k]).float() if k in radii else kth_neighbour_distances(real, k)
        for k in (k_precision, k_density)
    )
    fake_radii = kth_neighbour_distances(fake, k_precision)
    fake_inside = torch.zeros(len(fake), dtype=torch.bool)
    real_inside = torch.zeros(len(real), dtype=torch.bool)
    nearest_fake = torch.full((len(real),), torch.inf)
    balls_per_fake = 0.0
    for rows, d in distance_chunks(fake, real):  # d: (fake rows, all real)
        fake_inside[rows] = (d <= radii_pr[None, :]).any(1)
        real_inside |= (d <= fake_radii[rows, None]).any(0)
        balls_per_fake += float((d < radii_dc[None, :]).sum())
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return {
        "precision": float(fake_inside.double().mean()),
        "recall": float(real_inside.double().mean()),
        "density": balls_per_fake / (k_density * len(fake)),
        "coverage": float((nearest_fake < radii_dc).double().mean()),
    }
