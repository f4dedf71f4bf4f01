"""Evaluation metrics: FID, KID, precision/recall, density/coverage (overall and per class),
intra-class spread, class histogram, copying.

Sample quality is measured in the feature space of a small classifier trained on the dataset
itself (`fashiongen.nets.featnet`), since Inception-v3 features (Heusel et al., arXiv
1706.08500) mean little on 28x28 grey clothing: its semantic layer plus standardised texture
statistics of its first conv blocks (`metric_space`: name, version and definition, recorded in
every result), and beside them the high-frequency diagnostic (`highfreq`). `evaluate(images,
dataset=...)` runs every metric; the plain functions (`fid`, `kid`, `precision_recall`,
`density_coverage`, `class_diversity`, `class_metrics`, `nearest_train_distances`) and the
streaming `FeatureStats` work on any features. Statistics are float64; real-data statistics are
cached per (dataset, split, featnet fingerprint, metric version) under
`$XDG_CACHE_HOME/fashiongen/stats/`.

Feature networks: one for Fashion-MNIST ships with the package
(`fashiongen/featnets/fashion-mnist.safetensors`, its accuracy, seed, epochs, command and date
in the file's metadata). None ships for MNIST, whose files were not available offline when the
package was built: once the MNIST data is present, `fashiongen featnet train --dataset mnist`
trains one (a few minutes on one CPU thread, no horizontal flips) into
`$XDG_CACHE_HOME/fashiongen/featnets/`, where `load_featnet` finds it; until then evaluating
MNIST raises a `ConfigError` saying so. Training lives in `metrics.featnet_training`;
`metrics.degradations` holds the calibration ladder's degradations. The same command works for
any dataset name `load_dataset` accepts, such as `folder:PATH`: its images are converted to
1x28x28 grey (luma, antialiased bilinear resize), as are samples of any other shape at
evaluation time.
"""

from fashiongen.metrics.cache import ReferenceStats, stats_dir
from fashiongen.metrics.classes import (
    class_histogram,
    class_metrics,
    conditional_accuracy,
    entropy_nats,
    modes_missing,
)
from fashiongen.metrics.conditional import class_diversity, class_reference, min_class_samples
from fashiongen.metrics.evaluate import evaluate, reference_stats
from fashiongen.metrics.highfreq import mean_abs_laplacian
from fashiongen.metrics.memorisation import copy_rate, copy_threshold, nearest_train_distances
from fashiongen.metrics.metric_space import METRIC_NAME, METRIC_VERSION, metric_record
from fashiongen.metrics.neighbours import (
    density_coverage,
    kth_neighbour_distances,
    mean_pairwise_distance,
    neighbour_metrics,
    neighbour_radii,
    precision_recall,
)
from fashiongen.metrics.stats import FeatureStats, feature_stats, fid, kid

__all__ = [
    "METRIC_NAME",
    "METRIC_VERSION",
    "FeatureStats",
    "ReferenceStats",
    "class_diversity",
    "class_histogram",
    "class_metrics",
    "class_reference",
    "conditional_accuracy",
    "copy_rate",
    "copy_threshold",
    "density_coverage",
    "entropy_nats",
    "evaluate",
    "feature_stats",
    "fid",
    "kid",
    "kth_neighbour_distances",
    "mean_abs_laplacian",
    "mean_pairwise_distance",
    "metric_record",
    "min_class_samples",
    "modes_missing",
    "nearest_train_distances",
    "neighbour_metrics",
    "neighbour_radii",
    "precision_recall",
    "reference_stats",
    "stats_dir",
]
