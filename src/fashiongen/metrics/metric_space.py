"""The name, version and definition of the feature space every feature-based metric uses.

Version 1 was the feature net's 128-d semantic (penultimate) layer alone. Version 2 adds the
standardised texture statistics of the net's first two conv blocks (`fashiongen.nets.featnet`),
scaled to the semantic half's total variance, so FID, KID, precision/recall, density/coverage
and the per-class metrics also see speckle, checkerboards, blur, quantisation and contrast.
Every result records `metric_record(featnet)`, and the reference-statistics cache is keyed by
`METRIC_VERSION`, so numbers of two versions are never compared or mixed.
"""

from __future__ import annotations

from typing import Any

from fashiongen.nets.featnet import TEXTURE_BLOCKS, FeatNet

METRIC_NAME = "featnet-semantic+texture"
METRIC_VERSION = 2
METRIC_DEFINITION = (
    "features = [semantic 128-d ReLU layer of the dataset's feature net, "
    "(t - mean_train) / std_train * sqrt(tr Cov_train(semantic) / dim t)] where t holds each "
    "channel's spatial mean and standard deviation after conv blocks 1 and 2 (28 and 14 px), "
    "the texture statistics; "
    "FID, KID, precision/recall, density/coverage and per-class metrics in this space"
)


def metric_record(featnet: FeatNet) -> dict[str, Any]:
    """The JSON description of the metric space under `featnet`."""
    return {
        "name": METRIC_NAME,
        "version": METRIC_VERSION,
        "definition": METRIC_DEFINITION,
        "semantic_dim": featnet.feature_dim,
        "texture_dim": featnet.texture_dim,
        "texture_blocks": list(TEXTURE_BLOCKS),
        "texture_scale": round(float(featnet.texture_scale), 6),
    }
