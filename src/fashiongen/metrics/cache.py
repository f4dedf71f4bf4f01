"""Reference statistics of real data, computed once and cached in the user cache directory.

FID needs the mean and covariance of real features (Heusel et al., arXiv 1706.08500), the
k-NN metrics need the real features themselves and their k-th neighbour radii (Kynkäänniemi
et al., arXiv 1904.06991; Naeem et al., arXiv 2002.09797), the per-class metrics the real
labels, the radii within each class and each class's mean pairwise distance, the
high-frequency diagnostic the real images' mean absolute Laplacian, and the memorisation
copy rate needs the real test-to-train nearest distances. All are cached as `.npz` files
(read with `allow_pickle=False`, written atomically) under `$XDG_CACHE_HOME/fashiongen/stats/`
(default `~/.cache/fashiongen/stats/`), keyed by dataset, split, the featnet's weight
fingerprint and the metric version (`metrics.metric_space`), so neither a retrained featnet
nor another definition of the feature space ever reuses stale statistics. A cache file
that is unreadable or of another shape is recomputed; one written before the per-class
statistics existed keeps its features and gains them on first use.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fashiongen.files import atomic_path, cache_root, safe_name
from fashiongen.metrics.conditional import class_reference
from fashiongen.metrics.highfreq import mean_abs_laplacian
from fashiongen.metrics.memorisation import copy_threshold, nearest_train_distances
from fashiongen.metrics.metric_space import METRIC_VERSION
from fashiongen.metrics.neighbours import neighbour_radii
from fashiongen.metrics.stats import FeatureStats, within_kernel_sums
from fashiongen.nets.featnet import FeatNet

STATS_FORMAT = "fashiongen-stats/2"  # /1: semantic features only, no Laplacian


def stats_dir() -> Path:
    """`$XDG_CACHE_HOME/fashiongen/stats` (default `~/.cache/fashiongen/stats`)."""
    return cache_root() / "stats"


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays (no object dtypes) to an .npz file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_arrays(path: str | Path) -> dict[str, np.ndarray] | None:
    """Read an .npz file with `allow_pickle=False`; None if missing or unreadable."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


@dataclass
class ReferenceStats:
    """Real-data statistics for one (dataset, split, featnet)."""

    dataset: str
    split: str
    featnet_fingerprint: str
    mu: np.ndarray  # float64 (D,)
    cov: np.ndarray  # float64 (D, D)
    features: np.ndarray  # float32 (N, D)
    radii: dict[int, np.ndarray]  # k -> float32 (N,) distance to the k-th nearest other sample
    laplacian: float  # mean absolute Laplacian of the real images (`metrics.highfreq`)
    labels: np.ndarray | None = None  # int64 (N,) the real images' classes
    class_radii: dict[int, np.ndarray] = field(default_factory=dict)  # k -> float32 (N,), within
    # the image's class (NaN in classes of at most k images)
    class_spread: np.ndarray | None = None  # float64 (K,) mean pairwise distance in each class

    @property
    def count(self) -> int:
        return len(self.features)

    def has_class_stats(self, ks: tuple[int, ...] = ()) -> bool:
        """Whether labels, class spreads and within-class radii for `ks` are all here."""
        return (
            self.labels is not None
            and self.class_spread is not None
            and all(k in self.class_radii for k in ks)
        )

    def with_class_stats(
        self, labels: np.ndarray | torch.Tensor, ks: tuple[int, ...]
    ) -> ReferenceStats:
        """A copy holding the per-class statistics of these features under `labels`."""
        labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
        class_radii, class_spread = class_reference(self.features, labels, ks)
        return replace(self, labels=labels, class_radii=class_radii, class_spread=class_spread)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "format": np.array(STATS_FORMAT),
            "dataset": np.array(self.dataset),
            "split": np.array(self.split),
            "featnet_fingerprint": np.array(self.featnet_fingerprint),
            "mu": self.mu,
            "cov": self.cov,
            "features": self.features,
            "metric_version": np.array(METRIC_VERSION),
            "laplacian": np.array(self.laplacian),
        }
        arrays.update({f"radii_k{k}": v for k, v in self.radii.items()})
        if self.has_class_stats():
            arrays.update(labels=self.labels, class_spread=self.class_spread)
            arrays.update({f"class_radii_k{k}": v for k, v in self.class_radii.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ReferenceStats:
        def by_k(prefix: str) -> dict[int, np.ndarray]:
            return {
                int(key[len(prefix) :]): value
                for key, value in arrays.items()
                if key.startswith(prefix)
            }

        return cls(
            str(arrays["dataset"]),
            str(arrays["split"]),
            str(arrays["featnet_fingerprint"]),
            arrays["mu"],
            arrays["cov"],
            arrays["features"],
            by_k("radii_k"),
            float(arrays["laplacian"]),
            arrays.get("labels"),
            by_k("class_radii_k"),
            arrays.get("class_spread"),
        )


def stats_path(dataset: str, split: str, featnet_fingerprint: str) -> Path:
    """Cache file of the reference statistics for (dataset, split, featnet, metric version)."""
    stem = safe_name(dataset, fallback="dataset")
    return stats_dir() / f"{stem}-{split}-{featnet_fingerprint}-m{METRIC_VERSION}.npz"


def compute_reference_stats(
    images: torch.Tensor,
    featnet: FeatNet,
    *,
    dataset: str,
    split: str,
    ks: tuple[int, ...] = (3, 5),
    labels: torch.Tensor | None = None,
) -> ReferenceStats:
    """Features, mean, covariance and k-NN radii of real uint8 images, and with `labels`
    (N,) the per-class statistics."""
    stats = FeatureStats(keep_features=True)
    stats.update(featnet.features(images))
    mu, cov = stats.compute()
    features = stats.features
    radii = {k: r.numpy() for k, r in neighbour_radii(features, ks).items()}
    ref = ReferenceStats(
        dataset, split, featnet.fingerprint(), mu, cov, features, radii, mean_abs_laplacian(images)
    )
    return ref if labels is None else ref.with_class_stats(labels, ks)


def load_reference_stats(
    dataset: str, split: str, featnet_fingerprint: str, ks: tuple[int, ...] = ()
) -> ReferenceStats | None:
    """Cached statistics if present, readable, of this key and holding radii for `ks`."""
    arrays = load_arrays(stats_path(dataset, split, featnet_fingerprint))
    if (
        arrays is None
        or str(arrays.get("format", "")) != STATS_FORMAT
        or int(arrays.get("metric_version", -1)) != METRIC_VERSION
    ):
        return None
    try:
        ref = ReferenceStats.from_arrays(arrays)
    except KeyError:
        return None
    key_ok = (ref.dataset, ref.split, ref.featnet_fingerprint) == (
        dataset,
        split,
        featnet_fingerprint,
    )
    shapes_ok = (
        ref.cov.shape == (ref.mu.size, ref.mu.size)
        and ref.features.ndim == 2
        and all(k in ref.radii and ref.radii[k].shape == (ref.count,) for k in ks)
    )
    class_ok = (
        ref.has_class_stats()
        and ref.labels.shape == (ref.count,)
        and ref.class_spread.ndim == 1
        and all(r.shape == (ref.count,) for r in ref.class_radii.values())
    )
    if key_ok and shapes_ok and not class_ok:  # recomputed from the features when needed
        ref = replace(ref, labels=None, class_radii={}, class_spread=None)
    return ref if key_ok and shapes_ok else None


def save_reference_stats(ref: ReferenceStats) -> Path:
    """Write `ref` to its cache file atomically."""
    return save_arrays(stats_path(ref.dataset, ref.split, ref.featnet_fingerprint), ref.to_arrays())


def kid_sums_path(ref: ReferenceStats, seed: int, subsets: torch.Tensor) -> Path:
    """Cache file of KID's real-real kernel sums for one seed and subset shape."""
    count, size = subsets.shape
    stem = safe_name(ref.dataset, fallback="dataset")
    return stats_dir() / (
        f"{stem}-{ref.split}-{ref.featnet_fingerprint}-m{METRIC_VERSION}-"
        f"kid-s{seed}-{count}x{size}.npz"
    )


def reference_kid_sums(
    ref: ReferenceStats, subsets: torch.Tensor, seed: int, *, use_cache: bool = True
) -> torch.Tensor:
    """`within_kernel_sums` of the real features over `subsets` (drawn with `seed`), cached:
    a third of KID's work, the same for every sample set scored against `ref`."""
    path = kid_sums_path(ref, seed, subsets)
    arrays = load_arrays(path) if use_cache else None
    if arrays is not None and arrays.get("within", np.zeros(0)).shape == (len(subsets),):
        return torch.from_numpy(arrays["within"])
    within = within_kernel_sums(ref.features, subsets)
    if use_cache:
        save_arrays(path, {"within": within.numpy()})
    return within


def memorisation_path(dataset: str, num_train: int) -> Path:
    """Cache file of the real test-to-train nearest distances of a dataset."""
    return stats_dir() / f"{safe_name(dataset, fallback='dataset')}-memorisation-{num_train}.npz"


def reference_copy_threshold(
    dataset: str,
    train: torch.Tensor,
    test: torch.Tensor | Callable[[], torch.Tensor],
    *,
    use_cache: bool = True,
) -> float:
    """The copy threshold (1st percentile of real test-to-train distances), cached.

    Args:
        dataset: names the cache file.
        train: uint8 training images.
        test: uint8 held-out images, or a function loading them (called only on a cache miss).
        use_cache: read and write the cache.
    """
    path = memorisation_path(dataset, len(train))
    arrays = load_arrays(path) if use_cache else None
    if arrays is not None and arrays.get("distances", np.zeros((0, 0))).ndim == 1:
        return copy_threshold(arrays["distances"])
    distances = nearest_train_distances(test() if callable(test) else test, train)
    if use_cache:
        save_arrays(path, {"distances": distances})
    return copy_threshold(distances)
