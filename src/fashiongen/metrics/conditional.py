"""Conditional diversity: each class's samples against that class's real images.

Overall recall and coverage pool the classes: they say how much of the real data the samples
reach, not which classes fall short, nor whether the samples asked for a class reach that
class's images (a generator that draws one shirt for every request of a shirt loses only a
tenth of its overall recall). Here improved recall (Kynkäänniemi et al., arXiv 1904.06991)
and coverage (Naeem et al., arXiv 2002.09797) are computed within each class, the class's
samples against the class's real images with the real k-NN radii taken among the class's own
images, and the intra-class spread is the mean pairwise feature distance of a class's
samples divided by that of its real images (the pairwise-distance diversity by which MSGAN,
Mao et al., arXiv 1903.05628, scores conditional generators; about 1 for real data, 0 for
one image repeated, above 1 for samples mixing several classes). Classes with too few
samples or real images to hold a k-NN radius get None and are left out of the averages over
classes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fashiongen.metrics.neighbours import (
    as_features,
    mean_pairwise_distance,
    neighbour_metrics,
    neighbour_radii,
)

CLASS_DIVERSITY_KEYS = (
    "per_class_recall",
    "per_class_coverage",
    "intra_class_spread",
    "per_class_recall_by_class",
    "per_class_coverage_by_class",
    "intra_class_spread_by_class",
    "per_class_num_samples",
    "per_class_num_real",
    "per_class_min_samples",
)


def _as_labels(labels: np.ndarray | torch.Tensor, count: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(labels).detach().cpu().long()
    if t.shape != (count,):
        raise ValueError(f"{what} must be ({count},), got shape {tuple(t.shape)}")
    if count and int(t.min()) < 0:
        raise ValueError(f"{what} must be non-negative class indices")
    return t


def _num_classes(*labels: torch.Tensor, at_least: int = 0) -> int:
    return max([at_least, *(int(t.max()) + 1 for t in labels if len(t))])


def min_class_samples(k_recall: int = 3, k_coverage: int = 5) -> int:
    """Samples (and real images) a class needs to be scored: one more than the larger k."""
    return max(k_recall, k_coverage) + 1


def class_reference(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    ks: tuple[int, ...] = (3, 5),
    *,
    num_classes: int = 0,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Within-class k-NN radii and mean pairwise distances of real features.

    Args:
        features: (N, D) real features.
        labels: (N,) their classes.
        ks: neighbourhood sizes of the radii.
        num_classes: at least this many classes (more if the labels say so).

    Returns:
        ({k: float32 (N,) distance to the k-th nearest other image of the same class, NaN in
        classes of at most k images}, float64 (K,) mean pairwise distance within each class,
        NaN for classes of fewer than 2 images).
    """
    features = as_features(features)
    labels = _as_labels(labels, len(features), "labels")
    num_classes = _num_classes(labels, at_least=num_classes)
    radii = {k: torch.full((len(features),), math.nan) for k in ks}
    spread = np.full(num_classes, math.nan)
    for c in range(num_classes):
        rows = labels == c
        count = int(rows.sum())
        if count >= 2:
            spread[c] = mean_pairwise_distance(features[rows])
        usable = [k for k in ks if k < count]
        if usable:
            for k, r in neighbour_radii(features[rows], usable).items():
                radii[k][rows] = r
    return {k: r.numpy() for k, r in radii.items()}, spread


def _mean(values: list[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return float(np.mean(scored)) if scored else None


def _within_class(
    real: torch.Tensor,
    fake: torch.Tensor,
    real_radii: dict[int, torch.Tensor],
    real_spread: float,
    *,
    k_recall: int,
    k_coverage: int,
) -> tuple[float, float, float | None]:
    """One class: the recall and coverage of its samples `fake` against its real images
    (radii taken among them), and the samples' spread divided by `real_spread` (None
    unless that is positive)."""
    scores = neighbour_metrics(
        real, fake, k_precision=k_recall, k_density=k_coverage, real_radii=real_radii
    )
    spread = mean_pairwise_distance(fake) / real_spread if real_spread > 0 else None
    return scores["recall"], scores["coverage"], spread


def class_diversity(
    real: np.ndarray | torch.Tensor,
    real_labels: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    fake_labels: np.ndarray | torch.Tensor,
    *,
    num_classes: int = 0,
    k_recall: int = 3,
    k_coverage: int = 5,
    real_class_radii: dict[int, np.ndarray] | None = None,
    real_class_spread: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-class recall, per-class coverage and intra-class spread, per class and averaged.

    Args:
        real: (N, D) reference features; `real_labels` (N,) their classes.
        fake: (M, D) sample features; `fake_labels` (M,) the class each sample stands for.
        num_classes: at least this many classes in the lists (more if the labels say so).
        k_recall: k of the recall radii (as `precision_recall`).
        k_coverage: k of the coverage radii (as `density_coverage`).
        real_class_radii, real_class_spread: `class_reference(real, real_labels)`, cached.

    Returns:
        {"per_class_recall", "per_class_coverage", "intra_class_spread"}: means over the
        scored classes (None if none is); the same names with `_by_class`: one value per
        class, None for a class with fewer than `min_class_samples` samples or real images;
        "per_class_num_samples" and "per_class_num_real": counts per class;
        "per_class_min_samples".
    """
    real, fake = as_features(real), as_features(fake)
    real_labels = _as_labels(real_labels, len(real), "real_labels")
    fake_labels = _as_labels(fake_labels, len(fake), "fake_labels")
    num_classes = _num_classes(real_labels, fake_labels, at_least=num_classes)
    ks = (k_recall, k_coverage)
    if real_class_radii is None or real_class_spread is None:
        real_class_radii, real_class_spread = class_reference(real, real_labels, ks)
    class_radii = {k: torch.as_tensor(real_class_radii[k]).float() for k in set(ks)}
    min_count = min_class_samples(k_recall, k_coverage)
    num_real = torch.bincount(real_labels, minlength=num_classes).tolist()
    num_fake = torch.bincount(fake_labels, minlength=num_classes).tolist()
    per_class: list[tuple[float | None, float | None, float | None]] = []
    for c in range(num_classes):
        if min(num_real[c], num_fake[c]) < min_count:
            per_class.append((None, None, None))
            continue
        real_rows, fake_rows = real_labels == c, fake_labels == c
        real_spread = float(real_class_spread[c]) if c < len(real_class_spread) else math.nan
        per_class.append(
            _within_class(
                real[real_rows],
                fake[fake_rows],
                {k: r[real_rows] for k, r in class_radii.items()},
                real_spread,
                k_recall=k_recall,
                k_coverage=k_coverage,
            )
        )
    recall, coverage, spread = ([scores[i] for scores in per_class] for i in range(3))
    means = (_mean(recall), _mean(coverage), _mean(spread))
    values = (*means, recall, coverage, spread, num_fake, num_real, min_count)
    return dict(zip(CLASS_DIVERSITY_KEYS, values, strict=True))
