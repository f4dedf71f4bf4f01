"""Scoring generative models: draw class-balanced samples and score them, in one place.

`draw_and_score` is the one way a model is sampled for its metrics (balanced class labels
for a conditional model, one seed, the given sampler settings, timed), used by training-time
evaluation, the zoo check, `fashiongen eval` (`evaluate_source`, which also scores sample
files), `fashiongen compare` and the benchmarks. The metrics come from
`fashiongen.metrics.evaluate`: FID (Heusel et al., arXiv 1706.08500), KID (Bińkowski et al.,
arXiv 1801.01401), improved precision/recall (Kynkäänniemi et al., arXiv 1904.06991),
density/coverage (Naeem et al., arXiv 2002.09797), recall, coverage and spread within each
class, the entropy of predicted classes and the pixel-space copy rate; docs/metrics.md says
what each means. The feature network and dataset can be injected (`featnet=`, `dataset=`),
so tests run on the synthetic dataset with an untrained featnet. Results are written as JSON
by `write_json` (NaN as null).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fashiongen import limits, metrics
from fashiongen.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_model,
    model_source,
    sampling_with,
)
from fashiongen.config import SampleConfig
from fashiongen.device import select_device
from fashiongen.errors import CheckpointError, ConfigError, DataError
from fashiongen.files import write_text_atomic
from fashiongen.generate import generate
from fashiongen.models.base import DraftRefiner, Family, Student
from fashiongen.nets import featnet as featnets
from fashiongen.samples import balanced_labels, read_samples

DEFAULT_NUM_SAMPLES = 2000
MISSING = "—"

# (key, header, format) of the evaluation table and of the comparison's metric columns.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("fid", "FID", "{:.2f}"),
    ("laplacian_ratio", "HF ratio", "{:.2f}"),
    ("kid_mean", "KID", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("density", "density", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("per_class_recall", "class recall", "{:.3f}"),
    ("per_class_coverage", "class coverage", "{:.3f}"),
    ("intra_class_spread", "class spread", "{:.3f}"),
    ("class_entropy", "class entropy", "{:.3f}"),
    ("modes_missing", "modes missing", "{}"),
    ("conditional_accuracy", "cond. acc.", "{:.3f}"),
    ("copy_rate", "copy rate", "{:.2%}"),
)


def format_cell(value: Any, fmt: str) -> str:
    """`value` by `fmt`, or a dash for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return fmt.format(value + 0.0 if isinstance(value, float) else value)  # no "-0.000"


def json_safe(value: Any) -> Any:
    """Nested dicts and lists with NaN/inf as None and tuples/Paths made plain."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any, *, overwrite: bool = True) -> Path:
    """Write `data` as indented JSON, atomically (an existing file refused unless `overwrite`)."""
    path = Path(path)
    write_text_atomic(
        path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", overwrite=overwrite
    )
    return path


# ---------------------------------------------------------------- drawing and scoring


@dataclass(frozen=True)
class Drawn:
    """Samples drawn for scoring.

    Attributes:
        images: uint8 (N, C, H, W).
        labels: int64 (N,) balanced class labels, or None for an unconditional model.
        seconds: wall-clock time of the drawing.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    seconds: float


def draw_balanced(
    model: Family,
    num_samples: int,
    *,
    sampling: SampleConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Drawn:
    """`num_samples` images from one seed, classes balanced if the model is conditional;
    without `sampling`, a loaded model uses its checkpoint's settings."""
    limits.check_images_fit(num_samples, model.image_shape)
    labels = balanced_labels(num_samples, model.num_classes)
    started = time.perf_counter()
    images = generate(
        model, num_samples, labels=labels, seed=seed, sampling=sampling, progress=progress
    )
    return Drawn(images, labels, time.perf_counter() - started)


def draw_and_score(
    model: Family,
    num_samples: int,
    *,
    sampling: SampleConfig | None = None,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    ref: str = "test",
    featnet: Any = None,
    use_memorisation: bool = True,
    use_cache: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], Drawn]:
    """Draw balanced samples (`draw_balanced`) and score them with every metric.

    `seed` seeds the sampling and the KID subsets; `dataset`, `ref`, `featnet`,
    `use_memorisation` and `use_cache` go to `fashiongen.metrics.evaluate`.

    Returns:
        (the metrics dict, the samples drawn).
    """
    drawn = draw_balanced(model, num_samples, sampling=sampling, seed=seed, progress=progress)
    result = metrics.evaluate(
        drawn.images,
        labels=drawn.labels,
        dataset=dataset,
        ref=ref,
        featnet=featnet,
        seed=seed,
        use_memorisation=use_memorisation,
        use_cache=use_cache,
    )
    return result, drawn


def describe_sampling(model: Any, sampling: SampleConfig) -> str:
    """`dpmpp_2m, 20 steps` for diffusion families, `one pass` for the others."""
    if isinstance(model, Student):
        return f"distilled, {model.num_network_evaluations(sampling)} steps"
    fields = model.sampling_fields
    if not fields:
        return "one pass"
    parts = [sampling.sampler, f"{sampling.num_steps} steps"]
    if isinstance(model, DraftRefiner):
        parts.append(f"strength {sampling.strength:g}")
    if sampling.guidance_scale != 1 and model.num_classes:
        parts.append(f"guidance {sampling.guidance_scale:g}")
    if sampling.guide_scale != 1 and "guide_scale" in fields:
        by = sampling.guide or "its own early weights"
        parts.append(f"autoguidance {sampling.guide_scale:g} by {by}")
    return ", ".join(parts)


def checkpoint_info(
    model: Any, checkpoint: Checkpoint, drawn: Drawn, sampling: SampleConfig | None = None
) -> dict[str, Any]:
    """What was sampled (with `sampling`, default the checkpoint's) and how fast: path,
    family, step, dataset, sampler, device, speed."""
    sampling = sampling or checkpoint.config.sample
    seconds = drawn.seconds
    return {
        "kind": "checkpoint",
        "path": str(checkpoint.path),
        "family": checkpoint.config.model.name,
        "step": checkpoint.step,
        "dataset": checkpoint.config.data.name,
        "num_classes": model.num_classes,
        "sampler": describe_sampling(model, sampling),
        "sampling": dataclasses.asdict(sampling) if model.sampling_fields else None,
        "device": str(model.device),
        "num_threads": torch.get_num_threads(),
        "sampling_seconds": seconds,
        "sample_images_per_second": len(drawn.images) / seconds if seconds > 0 else None,
    }


# ---------------------------------------------------------------- one checkpoint or sample set


def is_checkpoint(path: str | Path) -> bool:
    """A weights file, a checkpoint folder, or a run folder holding one."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and (
        (path / "weights.safetensors").is_file()
        or (path / "final").is_dir()
        or bool(list_checkpoints(path))
    )


def load_for_sampling(path: str | Path, device: str = "auto") -> tuple[Any, Checkpoint]:
    """`load_model` (EMA weights) on the best available device."""
    return load_model(path, device=select_device(device))


def resolve_featnet(featnet: Any, dataset: str) -> Any:
    """`featnet`, or the dataset's own; called before sampling, so a missing one fails fast."""
    return featnet if featnet is not None else featnets.load_featnet(dataset)


def evaluate_source(
    source: str | Path,
    *,
    num_samples: int | None = None,
    ref: str = "test",
    seed: int = 0,
    dataset: str | None = None,
    featnet: Any = None,
    use_memorisation: bool = True,
    use_cache: bool = True,
    sampling_changes: dict[str, Any] | None = None,
    guide: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a checkpoint, run folder, `.npz` sample file or folder of PNGs with every metric.

    Args:
        source: a checkpoint (samples are drawn with its sampler settings and, for a
            conditional model, balanced class labels) or a sample set (`read_samples`).
        num_samples: samples to draw from a checkpoint (default 2000), or the first N of a
            sample set (default all of it).
        ref: the real split to compare with, "test" or "train".
        seed: seeds sampling and the KID subsets.
        dataset: the real dataset; default the checkpoint's, or "fashion-mnist" for files.
        featnet: the feature network (default `load_featnet(dataset)`).
        use_memorisation: compute the copy rate (nearest training images).
        use_cache: read and write cached reference statistics.
        sampling_changes: SampleConfig fields to sample a checkpoint with instead of its own
            (e.g. {"num_steps": 4}).
        guide: a weaker model (zoo name, run or checkpoint) to autoguide a DDPM with.
        progress: a bar of images drawn, on a terminal.

    Returns:
        `fashiongen.metrics.evaluate`'s dict plus `source` (what was evaluated and how).

    Raises:
        DataError / CheckpointError / ConfigError: a missing or unreadable source, or more
            samples asked of a file than it holds.
    """
    if ref not in ("test", "train"):
        raise ConfigError(f"unknown reference split {ref!r}; choose test or train")
    try:
        path = model_source(source)  # a zoo name, or an existing path
    except CheckpointError:
        raise DataError(
            f"no such checkpoint, run folder, zoo model or sample file: {source}"
        ) from None
    scoring = {
        "ref": ref,
        "seed": seed,
        "use_memorisation": use_memorisation,
        "use_cache": use_cache,
    }
    if is_checkpoint(path):
        result, info = _score_checkpoint(
            path, num_samples, dataset, featnet, progress, scoring, sampling_changes, guide
        )
    elif sampling_changes or guide:
        raise ConfigError(f"{source} is a sample set: sampling settings apply to a checkpoint")
    else:
        result, info = _score_sample_set(path, num_samples, dataset, featnet, scoring)
    result["notes"] = list(info.pop("notes", [])) + result["notes"]
    result["source"] = info
    result["seed"] = seed
    return result


def _score_checkpoint(
    path: Path,
    num_samples: int | None,
    dataset: str | None,
    featnet: Any,
    progress: bool,
    scoring: dict[str, Any],
    sampling_changes: dict[str, Any] | None = None,
    guide: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`evaluate_source` of a checkpoint: the scores and the checkpoint's description."""
    model, checkpoint = load_for_sampling(path)
    sampling = sampling_with(model, checkpoint.config.sample, sampling_changes, guide)
    dataset = dataset or checkpoint.config.data.name
    featnet = resolve_featnet(featnet, dataset)
    result, drawn = draw_and_score(
        model,
        num_samples or DEFAULT_NUM_SAMPLES,
        sampling=sampling,
        dataset=dataset,
        featnet=featnet,
        progress=progress,
        **scoring,
    )
    return result, checkpoint_info(model, checkpoint, drawn, sampling)


def _score_sample_set(
    path: Path,
    num_samples: int | None,
    dataset: str | None,
    featnet: Any,
    scoring: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`evaluate_source` of a sample file or folder: the scores and the set's description."""
    dataset = dataset or "fashion-mnist"
    featnet = resolve_featnet(featnet, dataset)
    images, labels, info = _read_sample_set(path, num_samples, featnet.class_names)
    result = metrics.evaluate(images, labels=labels, dataset=dataset, featnet=featnet, **scoring)
    return result, info


def _read_sample_set(
    path: Path, num_samples: int | None, class_names: list[str]
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """The first `num_samples` (default all) images of a sample set, labels, description."""
    samples = read_samples(path, class_names=class_names)
    if num_samples is not None and num_samples > len(samples):
        raise ConfigError(
            f"{path} holds {len(samples)} samples, fewer than the {num_samples} asked for"
        )
    count = num_samples or len(samples)
    labels = None if samples.labels is None else samples.labels[:count]
    return (
        samples.images[:count],
        labels,
        {"kind": "samples", "path": str(path), "notes": samples.notes},
    )


def format_evaluation(result: dict[str, Any]) -> str:
    """A readable table of an `evaluate_source` result, stating N, reference and featnet."""
    source = result.get("source", {})
    net = result["featnet"]
    accuracy = "unknown" if net["test_accuracy"] is None else f"{net['test_accuracy']:.4f}"
    if source.get("kind") == "checkpoint":
        classes = "balanced class labels" if source.get("num_classes") else "unconditional"
        what = (
            f"{source['path']} ({source['family']}, step {source['step']}, "
            f"{source['sampler']}, {classes}, seed {result.get('seed', 0)})"
        )
    else:
        labelled = "with labels" if result["conditional_accuracy"] is not None else "no labels"
        what = f"{source.get('path', '?')} (sample set, {labelled})"
    lines = [
        f"evaluated:   {what}",
        f"samples:     N = {result['num_samples']}",
        f"reference:   {result['dataset']} {result['ref']} split, {result['ref_count']} images",
        f"feature net: {net['name']}, test accuracy {accuracy}, fingerprint {net['fingerprint']}",
        *(
            [f"metric:      {result['metric']['name']} v{result['metric']['version']}"]
            if "metric" in result
            else []
        ),
        "",
        f"{'metric':<16}{'value':>10}   meaning",
    ]
    meanings = _meanings(result)
    for key, header, fmt in METRICS:
        lines.append(f"{header:<16}{format_cell(result.get(key), fmt):>10}   {meanings[key]}")
    if source.get("sample_images_per_second"):
        lines.append(
            f"{'sampling':<16}{source['sample_images_per_second']:>10.0f}   "
            f"images/s on {source['device']}, {source['num_threads']} threads"
        )
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


def _meanings(result: dict[str, Any]) -> dict[str, str]:
    """One line per metric of `format_evaluation`: what it measures and which way is good."""
    return {
        "fid": "Frechet distance of features (lower is better; floor > 0 at finite N)",
        "laplacian_ratio": "mean |Laplacian| / real's: > 1 speckle or noise, < 1 blur",
        "kid_mean": f"kernel distance, unbiased (+/- {result['kid_std']:.4f} over subsets)",
        "precision": "share of samples on the real manifold (fidelity)",
        "recall": "share of real images on the sample manifold (diversity)",
        "density": "real neighbourhoods per sample, ~1 for real data",
        "coverage": "share of real neighbourhoods holding a sample",
        "per_class_recall": "recall within each class, mean over classes",
        "per_class_coverage": "coverage within each class, mean over classes",
        "intra_class_spread": "pairwise distance within a class / real's, ~1 for real data",
        "class_entropy": f"of predicted classes, nats (max {result['class_entropy_max']:.3f})",
        "modes_missing": "classes with < 2% of the samples",
        "conditional_accuracy": "samples classified as the class asked for",
        "copy_rate": "samples closer to a training image than 99% of real test images",
    }
