"""Writing and checking the zoo: release tooling above the catalogue in `fashiongen.zoo`.

`export` folds a run's EMA weights into its model, stores the sampling weights as float16
with the run's config and records the run in the manifest; `check_fid` scores a shipped
model the way its manifest's `fid_check` was measured (tools/export_zoo.py,
benchmarks/rescore_zoo.py and tests/integration/test_zoo.py use it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from fashiongen.checkpoint import GUIDE_PREFIX, WEIGHTS_FILE, load_checkpoint, load_model
from fashiongen.config import (
    Override,
    RunConfig,
    SampleConfig,
    config_from_dict,
    config_to_dict,
    merge_overrides,
)
from fashiongen.digests import tensors_digest
from fashiongen.evaluation import draw_and_score
from fashiongen.files import atomic_path, write_text_atomic
from fashiongen.models import MODELS
from fashiongen.zoo import MANIFEST, ZOO_DIR, read_manifest, zoo_path

CHECK_NUM_SAMPLES = 500  # samples behind each model's recorded `fid_check`
# What the manifest records of a model's scores (`draw_and_score`'s keys).
MANIFEST_METRICS = (
    "fid",
    "laplacian_ratio",
    "kid_mean",
    "precision",
    "recall",
    "coverage",
    "conditional_accuracy",
    "per_class_recall",
    "per_class_coverage",
    "intra_class_spread",
    "copy_rate",
)


def manifest_scores(scores: dict[str, Any], *, num_samples: int, seed: int) -> dict[str, Any]:
    """A manifest entry's `metrics`: the draw's size and seed, and the scores of
    `MANIFEST_METRICS` that `scores` holds."""
    return {
        "num_samples": num_samples,
        "seed": seed,
        **{k: scores[k] for k in MANIFEST_METRICS if k in scores},
    }


def export(
    run: str | Path,
    name: str,
    info: dict[str, Any],
    zoo_dir: Path = ZOO_DIR,
    *,
    guide_from: str | Path | None = None,
    overrides: Sequence[Override] = (),
) -> Path:
    """Fold a run's EMA weights into its model, store them as float16 with its own
    autoguidance guide if it keeps one, and record `info` (preset, command, commit, training
    minutes, metrics ...) in the manifest. `guide_from`, an earlier checkpoint of the same
    run, gives a run that kept no guide those sampling weights as its own (what
    `train.keep_guide_at` keeps); `overrides` (`--set` text, e.g. `sample.guide_scale=2.5`)
    change the config it ships with."""
    checkpoint, _ = load_checkpoint(run)
    weights = {**checkpoint.weights, **checkpoint.ema}
    family = MODELS[checkpoint.config.model.name]
    own_guide = checkpoint.guide
    if guide_from is not None:
        early, _ = load_checkpoint(guide_from)
        own_guide = {**early.weights, **early.ema}
    if overrides:
        table = merge_overrides(config_to_dict(checkpoint.config), overrides)
        checkpoint.config = config_from_dict(table)
    tensors = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in weights.items()
        if family.needed_for_sampling(k)
    }
    tensors.update(
        {GUIDE_PREFIX + k: (v.half() if v.is_floating_point() else v) for k, v in own_guide.items()}
    )
    with safe_open(checkpoint.path / WEIGHTS_FILE, "pt") as f:
        metadata = dict(f.metadata())
    metadata["sampling_only"] = "true"
    if overrides:
        metadata["config"] = json.dumps(config_to_dict(checkpoint.config))
    metadata["tensors_sha256"] = tensors_digest(tensors)  # of the float16 tensors stored here
    path = zoo_dir / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    entries = read_manifest(zoo_dir / MANIFEST.name)
    entries[name] = {
        "file": path.name,
        "family": checkpoint.config.model.name,
        "num_classes": checkpoint.config.model.num_classes,
        "step": checkpoint.step,
        **info,
    }
    write_text_atomic(zoo_dir / MANIFEST.name, json.dumps(entries, indent=2) + "\n")
    return path


def write_manifest(entries: dict[str, dict[str, Any]]) -> None:
    write_text_atomic(MANIFEST, json.dumps(entries, indent=2) + "\n")


def zoo_sampling(config: RunConfig) -> SampleConfig:
    """A zoo model's sampler settings for the numbers its manifest records: fp32, whatever
    `sample.precision` says, so they reproduce on any machine (bf16 units or none)."""
    return dataclasses.replace(config.sample, precision="fp32")


def check_fid(name: str, num_samples: int = CHECK_NUM_SAMPLES, seed: int = 0) -> float:
    """FID of zoo model `name` on balanced samples (the number its manifest records, so a
    broken install or a changed sampler shows up as a different value)."""
    model, checkpoint = load_model(zoo_path(name))
    scores, _ = draw_and_score(
        model,
        num_samples,
        sampling=zoo_sampling(checkpoint.config),
        seed=seed,
        use_memorisation=False,
    )
    return float(scores["fid"])
