"""One entry point that scores a set of generated images against a dataset with every metric.

`evaluate` embeds the samples with the dataset's feature network (semantic features plus
standardised texture statistics: `metrics.metric_space`, whose name, version and definition
every result records under `metric`) and compares them with cached real statistics: FID (Heusel
et al., arXiv 1706.08500), KID (Bińkowski et al., arXiv 1801.01401), improved precision/recall
(Kynkäänniemi et al., arXiv 1904.06991), density/coverage (Naeem et al., arXiv 2002.09797), the
same recall and coverage within each class plus the intra-class spread (`metrics.conditional`),
the predicted-class histogram (Che et al., arXiv 1612.02136), pixel-space memorisation (Carlini
et al., arXiv 2301.13188) and the high-frequency diagnostic (mean absolute Laplacian against
the real images', `highfreq`).
Samples of another size or channel count are first converted to the featnet's 1x28x28 grey
input, and the result says so in `notes`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fashiongen.data import load_dataset
from fashiongen.errors import ConfigError
from fashiongen.images import to_uint8
from fashiongen.metrics.cache import (
    ReferenceStats,
    compute_reference_stats,
    load_reference_stats,
    reference_copy_threshold,
    reference_kid_sums,
    save_reference_stats,
)
from fashiongen.metrics.classes import class_metrics
from fashiongen.metrics.conditional import CLASS_DIVERSITY_KEYS, class_diversity
from fashiongen.metrics.highfreq import mean_abs_laplacian
from fashiongen.metrics.memorisation import memorisation_metrics
from fashiongen.metrics.metric_space import metric_record
from fashiongen.metrics.neighbours import neighbour_metrics
from fashiongen.metrics.stats import FeatureStats, fid, kid, kid_subsets
from fashiongen.nets.featnet import IMAGE_SIZE, FeatNet, load_featnet, to_featnet_input

FEATNET_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
NUM_KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
K_PRECISION_RECALL = 3
K_DENSITY_COVERAGE = 5


def to_featnet_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, 1, 28, 28); unchanged if already that shape."""
    if tuple(images.shape[1:]) == FEATNET_SHAPE:
        return images
    return to_uint8(to_featnet_input(images))


def _load_split(dataset: str, split: str) -> torch.Tensor:
    return to_featnet_images(load_dataset(dataset, split).images)


def reference_stats(
    dataset: str,
    split: str,
    featnet: FeatNet,
    *,
    use_cache: bool = True,
    ks: tuple[int, ...] = (K_PRECISION_RECALL, K_DENSITY_COVERAGE),
) -> ReferenceStats:
    """Real statistics of `dataset`/`split` under `featnet`, per class too, from the cache
    or computed (a cache file without the per-class statistics gains them)."""
    fingerprint = featnet.fingerprint()
    ref = load_reference_stats(dataset, split, fingerprint, ks) if use_cache else None
    if ref is not None and ref.has_class_stats(ks):
        return ref
    data = load_dataset(dataset, split)
    if ref is not None and len(data.labels) == ref.count:
        ref = ref.with_class_stats(data.labels, ks)
    else:
        ref = compute_reference_stats(
            to_featnet_images(data.images),
            featnet,
            dataset=dataset,
            split=split,
            ks=ks,
            labels=data.labels,
        )
    if use_cache:
        save_reference_stats(ref)
    return ref


def _class_diversity(
    real: ReferenceStats,
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    class_names: list[str],
    notes: list[str],
) -> dict[str, Any]:
    """`class_diversity` of the samples (their requested classes, else the featnet's
    predictions) against the reference's labelled features, with notes on what was left out.

    Each class's samples are scored against the reference images of that class with the same
    k as the overall metrics (3 for recall, 5 for coverage): `per_class_recall`,
    `per_class_coverage` are the means over the scored classes of the recall and coverage
    within each class; `intra_class_spread` the mean over them of (mean pairwise feature
    distance of the class's samples) / (the same of its real images), ~1 for real data, 0
    for one image repeated; `per_class_recall_by_class`, `per_class_coverage_by_class`,
    `intra_class_spread_by_class` one float per class in `class_names` order, None for a
    class with fewer than `per_class_min_samples` (k + 1 = 6) samples or real images (left
    out of the means, and named in `notes`); `per_class_num_samples`, `per_class_num_real`
    the counts per class. All of them are None when the reference split has no labels or a
    single class (with a note)."""
    if real.labels is None or len(np.unique(real.labels)) < 2:
        what = "no labels" if real.labels is None else "a single class"
        notes.append(f"per-class metrics not computed: the {real.split} split has {what}")
        return dict.fromkeys(CLASS_DIVERSITY_KEYS)
    if labels is None:
        notes.append(
            "per-class metrics: each sample counts for the class the feature net "
            "predicts for it (no requested labels); real images for their own labels"
        )
    scores = class_diversity(
        real.features,
        real.labels,
        features,
        logits.argmax(1) if labels is None else labels,
        num_classes=len(class_names),
        k_recall=K_PRECISION_RECALL,
        k_coverage=K_DENSITY_COVERAGE,
        real_class_radii=real.class_radii,
        real_class_spread=real.class_spread,
    )
    least = scores["per_class_min_samples"]
    left_out = []
    for c, (n, r, value) in enumerate(
        zip(
            scores["per_class_num_samples"],
            scores["per_class_num_real"],
            scores["per_class_recall_by_class"],
            strict=True,
        )
    ):
        name = class_names[c] if c < len(class_names) else str(c)
        if value is None:
            left_out.append(f"{name} ({n} samples)" if n < least else f"{name} ({r} real images)")
    if left_out:
        notes.append(
            f"per-class metrics leave out classes with fewer than {least} samples or "
            f"real images: {', '.join(left_out)}"
        )
    return scores


def _check_inputs(images: torch.Tensor, labels: torch.Tensor | None) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError("evaluate expects uint8 (N, C, H, W) images; convert with to_uint8")
    min_samples = max(K_PRECISION_RECALL, K_DENSITY_COVERAGE) + 1
    if len(images) < min_samples:
        raise ConfigError(f"evaluate needs at least {min_samples} samples, got {len(images)}")
    if labels is not None and len(labels) != len(images):
        raise ConfigError(f"{len(labels)} labels for {len(images)} images")
    if labels is not None and int(labels.min()) < 0:
        raise ConfigError("labels must be class indices >= 0")


def _kid(
    features: torch.Tensor,
    real: ReferenceStats,
    num_subsets: int,
    subset_size: int,
    seed: int,
    use_cache: bool,
) -> dict[str, Any]:
    """KID's mean and spread over `num_subsets` subsets drawn with `seed` (the real subsets
    first, their kernel sums from the cache)."""
    generator = torch.Generator().manual_seed(seed)
    size = min(subset_size, len(features), real.count)
    real_subsets = kid_subsets(real.count, num_subsets, size, generator)
    within = reference_kid_sums(real, real_subsets, seed, use_cache=use_cache)
    mean, std = kid(
        features,
        real.features,
        num_subsets,
        subset_size,
        generator=generator,
        subsets_b=real_subsets,
        within_b=within,
    )
    return {
        "kid_mean": mean,
        "kid_std": std,
        "kid_subset_size": min(subset_size, len(features), real.count),
        "kid_num_subsets": num_subsets,
    }


def _high_frequency(images: torch.Tensor, real: ReferenceStats) -> dict[str, float]:
    """The samples' mean absolute Laplacian, the real images', and their ratio."""
    value = mean_abs_laplacian(images)
    return {
        "laplacian_mean_abs": value,
        "laplacian_mean_abs_real": real.laplacian,
        "laplacian_ratio": value / real.laplacian if real.laplacian > 0 else None,
    }


def _fid_and_high_frequency(
    images: torch.Tensor, mu: np.ndarray, cov: np.ndarray, real: ReferenceStats
) -> dict[str, Any]:
    """FID of the samples' feature mean `mu` and covariance `cov`, then `_high_frequency`."""
    return {"fid": fid(mu, cov, real.mu, real.cov), **_high_frequency(images, real)}


def _memorisation(
    images: torch.Tensor, dataset: str, use_memorisation: bool, use_cache: bool
) -> dict[str, Any]:
    """Nearest-training-image distances and the copy rate of featnet-shaped uint8 images
    (all None without `use_memorisation`)."""
    if not use_memorisation:
        return dict(nn_train_distance_median=None, copy_rate=None, copy_threshold=None)
    train = _load_split(dataset, "train")
    threshold = reference_copy_threshold(
        dataset, train, lambda: _load_split(dataset, "test"), use_cache=use_cache
    )
    return memorisation_metrics(images, train, threshold)


def _neighbours(features: torch.Tensor, real: ReferenceStats) -> dict[str, float]:
    """Precision/recall (k = 3) and density/coverage (k = 5) against the cached real radii."""
    return neighbour_metrics(
        real.features,
        features,
        k_precision=K_PRECISION_RECALL,
        k_density=K_DENSITY_COVERAGE,
        real_radii=real.radii,
    )


def _provenance(
    num_samples: int, dataset: str, ref: str, real: ReferenceStats, featnet: FeatNet
) -> dict[str, Any]:
    """What was scored against what: counts, the reference split, the featnet and metric."""
    return {
        "num_samples": num_samples,
        "dataset": dataset,
        "ref": ref,
        "ref_count": real.count,
        "featnet": {
            "name": featnet.name,
            "test_accuracy": featnet.test_accuracy,
            "fingerprint": featnet.fingerprint(),
        },
        "metric": metric_record(featnet),
    }


class _StagedResult:
    """`evaluate`'s result, built stage by stage, and the seconds per stage, each stage timed
    from the end of the one before."""

    def __init__(self) -> None:
        self.scores: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def add(self, stage: str, scores: dict[str, Any] | None = None) -> None:
        """Merge `scores` (if any) into the result and time `stage`."""
        self.scores.update(scores or {})
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._clock, 3)
        self._clock = now


def _featnet_view(
    images: torch.Tensor, featnet: FeatNet, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The samples as the featnet sees them (uint8 1x28x28 grey; a conversion is noted),
    their features and logits, and the features' float64 mean (D,) and covariance (D, D)."""
    if tuple(images.shape[1:]) != FEATNET_SHAPE:
        notes.append(
            f"samples converted from {'x'.join(map(str, images.shape[1:]))} to 1x28x28 "
            "grey (luma, antialiased bilinear resize) for the featnet and memorisation"
        )
    images = to_featnet_images(images.cpu())
    stats = FeatureStats(keep_features=True)
    features, logits = featnet.features_and_logits(images)
    stats.update(features)
    mu, cov = stats.compute()
    return images, features, logits, mu, cov


def evaluate(
    images: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    dataset: str = "fashion-mnist",
    ref: str = "test",
    featnet: FeatNet | None = None,
    num_kid_subsets: int = NUM_KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    use_memorisation: bool = True,
    use_cache: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Score generated images against a dataset with every metric.

    Args:
        images: uint8 (N, C, H, W) in [0, 255]; converted to 1x28x28 grey if need be.
        labels: the class each sample was asked for (N,), for conditional accuracy and the
            per-class metrics (without them, each sample counts for its predicted class).
        dataset: a name `fashiongen.data.load_dataset` accepts; picks featnet and references.
        ref: the real split to compare with, "test" or "train".
        featnet: defaults to `load_featnet(dataset)`.
        num_kid_subsets: KID subsets; `kid_subset_size` is capped at the smaller set.
        use_memorisation: compute nearest-training-image distances (the slowest part).
        use_cache: read and write reference statistics in the user cache dir.
        seed: seeds the KID subset draws.

    Returns:
        A flat JSON-able dict: `num_samples`, `dataset`, `ref`, `ref_count`, `featnet` {name,
        test_accuracy, fingerprint}, `metric` {name, version, definition, ...},
        `laplacian_mean_abs` (samples), `laplacian_mean_abs_real`, `laplacian_ratio` (samples /
        real: > 1 excess high-frequency energy, < 1 blur), `fid`, `kid_mean`, `kid_std`,
        `precision`, `recall`, `density`, `coverage`, `class_histogram`, `class_names`,
        `class_entropy` (nats), `class_entropy_max`, `modes_missing`, `conditional_accuracy`
        (None without labels), `nn_train_distance_median`, `copy_rate`, `copy_threshold` (None
        without memorisation), `notes` and `seconds` per stage; and the per-class keys of
        `_class_diversity`.

    Raises:
        ConfigError: too few samples, mismatched labels, or no featnet for the dataset.
    """
    _check_inputs(images, labels)
    notes: list[str] = []
    result = _StagedResult()
    featnet = featnet if featnet is not None else load_featnet(dataset)
    images, features, logits, mu, cov = _featnet_view(images, featnet, notes)
    result.add("features")
    real = reference_stats(dataset, ref, featnet, use_cache=use_cache)
    result.add("reference")
    provenance = _provenance(len(images), dataset, ref, real, featnet)
    result.add("fid", {**provenance, **_fid_and_high_frequency(images, mu, cov, real)})
    result.add("kid", _kid(features, real, num_kid_subsets, kid_subset_size, seed, use_cache))
    result.add("neighbours", _neighbours(features, real))
    class_names = list(featnet.class_names)
    result.add("classes", {**class_metrics(logits, labels), "class_names": class_names})
    per_class = _class_diversity(real, features, logits, labels, class_names, notes)
    result.add("per_class", per_class)
    result.add("memorisation", _memorisation(images, dataset, use_memorisation, use_cache))
    return {**result.scores, "notes": notes, "seconds": result.seconds}
