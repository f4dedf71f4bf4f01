"""Class-histogram metrics from the feature network's predictions: diversity and conditioning.

A generator that covers every class yields a flat histogram of predicted classes; one that
collapses leaves classes empty. Following the mode-counting evaluation of Che et al.
(arXiv 1612.02136) and the label-entropy view behind the Inception score (Salimans et al.,
arXiv 1606.03498), we report the entropy of the predicted-class histogram in nats (maximum
log K, log 10 = 2.303 for ten classes), the number of classes predicted for fewer than 2% of
samples ("modes missing"), and, for class-conditional models, the share of samples the
classifier assigns to the requested class (conditional accuracy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

MODE_MISSING_SHARE = 0.02  # a class with a smaller share of samples counts as missing


def class_histogram(logits: torch.Tensor, num_classes: int | None = None) -> np.ndarray:
    """Share of samples predicted as each class (argmax of (N, K) logits), float64 (K,)."""
    num_classes = num_classes or logits.shape[1]
    counts = torch.bincount(logits.argmax(1).cpu(), minlength=num_classes).double()
    return (counts / max(1, len(logits))).numpy()


def entropy_nats(histogram: np.ndarray) -> float:
    """Shannon entropy in nats of a histogram (normalised here); 0 for one class."""
    p = np.asarray(histogram, dtype=np.float64)
    total = p.sum()
    if total <= 0:
        return 0.0
    p = p[p > 0] / total
    return float(-(p * np.log(p)).sum())


def modes_missing(histogram: np.ndarray, min_share: float = MODE_MISSING_SHARE) -> int:
    """Number of classes holding less than `min_share` of the samples."""
    p = np.asarray(histogram, dtype=np.float64)
    return int((p / max(p.sum(), 1e-300) < min_share).sum())


def conditional_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples whose predicted class is the requested label."""
    if len(labels) != len(logits):
        raise ValueError(f"{len(labels)} labels for {len(logits)} samples")
    return float((logits.argmax(1).cpu() == labels.cpu().long()).double().mean())


def class_metrics(logits: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """Histogram, entropy (nats, with its maximum), modes missing and conditional accuracy."""
    histogram = class_histogram(logits)
    return {
        "class_histogram": [float(v) for v in histogram],
        "class_entropy": entropy_nats(histogram),
        "class_entropy_max": math.log(len(histogram)),
        "modes_missing": modes_missing(histogram),
        "conditional_accuracy": None if labels is None else conditional_accuracy(logits, labels),
    }
