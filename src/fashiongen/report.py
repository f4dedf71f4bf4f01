"""Evaluation of one checkpoint or sample set, and the comparison report across runs.

`evaluate_source` scores a checkpoint, run folder or sample file (`fashiongen eval`);
`compare_runs` samples every run afresh, times its sampler and scores it at one N and seed,
then writes `report.md`, a self-contained `report.html` (images as base64 data URIs) and
`report.json` (`fashiongen compare`); `train_all` trains every family under the same time
budget and writes that report (`fashiongen train --model all`). The metrics come from
`fashiongen.metrics.evaluate`: FID (Heusel et al., arXiv 1706.08500), KID (Bińkowski et al.,
arXiv 1801.01401), improved precision/recall (Kynkäänniemi et al., arXiv 1904.06991),
density/coverage (Naeem et al., arXiv 2002.09797), recall, coverage and spread within each
class, the entropy of predicted classes and the pixel-space copy rate; docs/metrics.md says
what each means and how they behave on real data. The feature network and dataset can be
injected (`featnet=`, `dataset=`), so tests run on the synthetic dataset with an untrained
featnet.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from fashiongen import limits, plots
from fashiongen.checkpoint import Checkpoint, list_checkpoints, model_source
from fashiongen.config import (
    PRESETS_DIR,
    RunConfig,
    SampleConfig,
    config_from_dict,
    merge_overrides,
    read_toml,
)
from fashiongen.errors import CheckpointError, ConfigError, DataError
from fashiongen.files import safe_name, write_text_atomic
from fashiongen.synth import balanced_labels, read_samples

DEFAULT_NUM_SAMPLES = 2000
QUICK_SUFFIX = "-quick"
BUDGET_EPOCHS = 100_000  # so that train.max_minutes, not the epochs, ends a budgeted run
GRID_PER_CLASS = 8
GRID_UNCONDITIONAL = 64
MARKDOWN_FILE, HTML_FILE, JSON_FILE = "report.md", "report.html", "report.json"
PLOT_FILE = "quality_vs_cost.png"
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
COST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "run", "{}"),
    ("family", "family", "{}"),
    ("parameters", "params", "{:,}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("train_images_per_second", "train img/s", "{:.0f}"),
    ("epochs", "epochs", "{:.2f}"),
    ("sampler", "sampler", "{}"),
    ("sample_images_per_second", "sample img/s", "{:.0f}"),
)
COLUMNS = COST_COLUMNS + METRICS


def _cell(value: Any, fmt: str) -> str:
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
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n",
                      overwrite=overwrite)
    return path


# ---------------------------------------------------------------- one checkpoint or sample set


def is_checkpoint(path: str | Path) -> bool:
    """A weights file, a checkpoint folder, or a run folder holding one."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and ((path / "weights.safetensors").is_file()
                              or (path / "final").is_dir() or bool(list_checkpoints(path)))


def describe_sampling(model: Any, sampling: SampleConfig) -> str:
    """`dpmpp_2m, 20 steps` for diffusion families, `one pass` for the others."""
    fields = model.sampling_fields
    if not fields:
        return "one pass"
    parts = [sampling.sampler, f"{sampling.num_steps} steps"]
    if "strength" in fields:
        parts.append(f"strength {sampling.strength:g}")
    if sampling.guidance_scale != 1 and model.num_classes:
        parts.append(f"guidance {sampling.guidance_scale:g}")
    return ", ".join(parts)


def load_for_sampling(path: str | Path, device: str = "auto") -> tuple[Any, Checkpoint]:
    """`load_model` (EMA weights) on the best available device."""
    from fashiongen.checkpoint import load_model
    from fashiongen.device import select_device

    return load_model(path, device=select_device(device))


def resolve_featnet(featnet: Any, dataset: str) -> Any:
    """`featnet`, or the dataset's own; called before sampling, so a missing one fails fast."""
    from fashiongen.nets.featnet import load_featnet

    return featnet if featnet is not None else load_featnet(dataset)


def sample_checkpoint(model: Any, checkpoint: Checkpoint, num_samples: int, *, seed: int = 0,
                      progress: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Sample a model with its checkpoint's sampler settings, balanced classes if conditional.

    Returns:
        uint8 images (N, C, H, W), the requested labels (or None), and a description:
        path, family, step, dataset, sampler, seconds, images_per_second.
    """
    from fashiongen.generate import generate

    limits.check_images_fit(num_samples, model.image_shape)
    labels = balanced_labels(num_samples, model.num_classes)
    sampling = checkpoint.config.sample
    started = time.perf_counter()
    images = generate(model, num_samples, labels=labels, seed=seed, sampling=sampling,
                      progress=progress)
    seconds = time.perf_counter() - started
    info = {
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
        "sample_images_per_second": num_samples / seconds if seconds > 0 else None,
    }
    return images, labels, info


def evaluate_source(source: str | Path, *, num_samples: int | None = None, ref: str = "test",
                    seed: int = 0, dataset: str | None = None, featnet: Any = None,
                    use_memorisation: bool = True, use_cache: bool = True,
                    progress: bool = False) -> dict[str, Any]:
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
        progress: a bar of images drawn, on a terminal.

    Returns:
        `fashiongen.metrics.evaluate`'s dict plus `source` (what was evaluated and how).

    Raises:
        DataError / CheckpointError / ConfigError: a missing or unreadable source, or more
            samples asked of a file than it holds.
    """
    from fashiongen.metrics import evaluate

    if ref not in ("test", "train"):
        raise ConfigError(f"unknown reference split {ref!r}; choose test or train")
    try:
        path = model_source(source)  # a zoo name, or an existing path
    except CheckpointError:
        raise DataError(f"no such checkpoint, run folder, zoo model or sample file: {source}"
                        ) from None
    if is_checkpoint(path):
        model, checkpoint = load_for_sampling(path)
        dataset = dataset or checkpoint.config.data.name
        featnet = resolve_featnet(featnet, dataset)
        images, labels, info = sample_checkpoint(model, checkpoint,
                                                 num_samples or DEFAULT_NUM_SAMPLES, seed=seed,
                                                 progress=progress)
    else:
        dataset = dataset or "fashion-mnist"
        featnet = resolve_featnet(featnet, dataset)
        samples = read_samples(path, class_names=featnet.class_names)
        if num_samples is not None and num_samples > len(samples):
            raise ConfigError(f"{path} holds {len(samples)} samples, fewer than the "
                              f"{num_samples} asked for")
        count = num_samples or len(samples)
        images = samples.images[:count]
        labels = None if samples.labels is None else samples.labels[:count]
        info = {"kind": "samples", "path": str(path), "notes": samples.notes}
    result = evaluate(images, labels=labels, dataset=dataset, ref=ref, featnet=featnet,
                      seed=seed, use_memorisation=use_memorisation, use_cache=use_cache)
    result["notes"] = list(info.pop("notes", [])) + result["notes"]
    result["source"] = info
    result["seed"] = seed
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """A readable table of an `evaluate_source` result, stating N, reference and featnet."""
    source = result.get("source", {})
    net = result["featnet"]
    accuracy = "unknown" if net["test_accuracy"] is None else f"{net['test_accuracy']:.4f}"
    if source.get("kind") == "checkpoint":
        classes = "balanced class labels" if source.get("num_classes") else "unconditional"
        what = (f"{source['path']} ({source['family']}, step {source['step']}, "
                f"{source['sampler']}, {classes}, seed {result.get('seed', 0)})")
    else:
        labelled = "with labels" if result["conditional_accuracy"] is not None else "no labels"
        what = f"{source.get('path', '?')} (sample set, {labelled})"
    lines = [
        f"evaluated:   {what}",
        f"samples:     N = {result['num_samples']}",
        f"reference:   {result['dataset']} {result['ref']} split, {result['ref_count']} images",
        f"feature net: {net['name']}, test accuracy {accuracy}, fingerprint {net['fingerprint']}",
        *([f"metric:      {result['metric']['name']} v{result['metric']['version']}"]
          if "metric" in result else []),
        "",
        f"{'metric':<16}{'value':>10}   meaning",
    ]
    meanings = {
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
    for key, header, fmt in METRICS:
        lines.append(f"{header:<16}{_cell(result.get(key), fmt):>10}   {meanings[key]}")
    if source.get("sample_images_per_second"):
        lines.append(f"{'sampling':<16}{source['sample_images_per_second']:>10.0f}   "
                     f"images/s on {source['device']}, {source['num_threads']} threads")
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


# ---------------------------------------------------------------- the comparison report


def _run_folder(path: Path) -> Path:
    """The run folder of a run, checkpoint folder or weights file (where summary.json is)."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "summary.json").is_file():
            return candidate
    return path if path.is_dir() else path.parent


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name if p.name not in ("final", "") else p.parent.name for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}-{seen[name]}")
    return out


def _grid_images(images: torch.Tensor, labels: torch.Tensor | None, num_classes: int
                 ) -> tuple[torch.Tensor, int | None]:
    """Up to 8 samples per class, one row per class; else the first 64 samples."""
    if labels is not None and num_classes and len(images) >= num_classes:
        per_class = min(GRID_PER_CLASS, len(images) // num_classes)
        chosen = torch.cat([torch.nonzero(labels == k).flatten()[:per_class]
                            for k in range(num_classes)])
        return images[chosen], num_classes
    return images[:GRID_UNCONDITIONAL], None


def score_run(run: str | Path, *, num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0,
              dataset: str | None = None, featnet: Any = None, use_memorisation: bool = True,
              use_cache: bool = True, progress: bool = False
              ) -> tuple[dict[str, Any], torch.Tensor, int | None]:
    """One report row: costs from summary.json, sampling speed and metrics measured now.

    Returns:
        (row, grid images uint8 (n, C, H, W), grid rows or None).
    """
    from fashiongen.metrics import evaluate

    run = Path(run)
    if not run.exists():
        raise DataError(f"no such run folder or checkpoint: {run}")
    folder = _run_folder(run)
    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder / 'summary.json'} is unreadable ({e})") from None
    model, checkpoint = load_for_sampling(run)
    dataset = dataset or checkpoint.config.data.name
    featnet = resolve_featnet(featnet, dataset)
    images, labels, info = sample_checkpoint(model, checkpoint, num_samples, seed=seed,
                                             progress=progress)
    result = evaluate(images, labels=labels, dataset=dataset, featnet=featnet, seed=seed,
                      use_memorisation=use_memorisation, use_cache=use_cache)
    ips = info["sample_images_per_second"]
    row = {
        "run_dir": str(folder),
        "family": info["family"],
        "parameters": summary.get("parameters"),
        "steps": summary.get("steps", info["step"]),
        "train_seconds": summary.get("train_seconds"),
        "train_images_per_second": summary.get("train_images_per_second"),
        "epochs": summary.get("epochs"),
        "train_device": summary.get("device"),
        "sampler": info["sampler"],
        "sampling": info["sampling"],
        "sample_images_per_second": ips,
        "seconds_per_1000_samples": 1000 / ips if ips else None,
        "sample_device": info["device"],
        **{key: result.get(key) for key, _, _ in METRICS},
        "kid_std": result["kid_std"],
        "class_entropy_max": result["class_entropy_max"],
        "evaluation": result,
    }
    if not summary:
        result["notes"].append(f"no summary.json in {folder}: training costs unknown")
    grid, grid_rows = _grid_images(images, labels, info["num_classes"])
    return row, grid, grid_rows


def quality_vs_cost(rows: Sequence[dict[str, Any]]) -> Figure:
    """FID against training seconds and against sampling seconds per 1000 images."""
    fig = Figure(figsize=(9.5, 3.8), dpi=110)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(axes, ("train_seconds", "seconds_per_1000_samples"),
                              ("training time (s)", "sampling time per 1000 images (s)"),
                              strict=True):
        points = [(r[key], r["fid"], r["name"]) for r in rows
                  if r.get(key) and r.get("fid") is not None]
        for x, y, name in points:
            ax.scatter([x], [y], s=36)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        xs = [x for x, _, _ in points]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("FID (lower is better)")
    fig.suptitle("quality versus cost", fontsize=10)
    fig.tight_layout()
    return fig


def machine_info() -> dict[str, Any]:
    """Where the sampling speeds were measured."""
    return {"platform": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                 num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0,
                 dataset: str | None = None, featnet: Any = None,
                 use_memorisation: bool = True, use_cache: bool = True,
                 overwrite: bool = False, log: Callable[[str], None] = print,
                 progress: bool = False) -> Path:
    """Compare runs: one table row each, sample grids, loss curves, quality-versus-cost plots.

    Every run is sampled afresh (`num_samples` images, `seed`, its own sampler settings,
    balanced classes if conditional), timed, and scored by `evaluate` against the real test
    split. Writes `report.md` (images beside it), `report.html` (self-contained) and
    `report.json` into `out_dir`, which appears whole once the report is complete; an
    existing `out_dir` is refused before any scoring unless `overwrite`.

    Args:
        run_dirs: run folders (or checkpoints) to compare.
        out_dir: the report folder (created).
        num_samples: samples per run.
        seed: seeds sampling and KID.
        dataset: the real dataset; default each run's own.
        featnet: the feature network; default `load_featnet` of each run's dataset.
        use_memorisation: compute copy rates.
        use_cache: read and write cached reference statistics.
        overwrite: replace an existing `out_dir`.
        log: receives one line per run.
        progress: a bar of images drawn per run, on a terminal.

    Returns:
        The path of `report.html`.
    """
    from fashiongen.files import staged_folder

    if not run_dirs:
        raise ConfigError("compare needs at least one run folder")
    paths = [model_source(p) for p in run_dirs]  # zoo names too
    for path in paths:  # fail before the first, possibly long, scoring
        if not is_checkpoint(path):
            raise DataError(f"{path} holds no checkpoint")
    check_can_score(paths, dataset=dataset, featnet=featnet)
    with staged_folder(out_dir, overwrite=overwrite) as out:
        _write_report(out, paths, num_samples=num_samples, seed=seed, dataset=dataset,
                      featnet=featnet, use_memorisation=use_memorisation,
                      use_cache=use_cache, log=log, progress=progress)
    return Path(out_dir) / HTML_FILE


def trained_on(path: str | Path) -> str:
    """The dataset a checkpoint's model was trained on, from its header alone."""
    from fashiongen.checkpoint import read_metadata

    return str(json.loads(read_metadata(path)["config"]).get("data", {}).get("name",
                                                                           "fashion-mnist"))


def check_can_score(paths: Sequence[Path], *, dataset: str | None, featnet: Any) -> None:
    """Refuse, before any sampling, models of different datasets compared without one
    `dataset` to score them against, and a dataset without a feature network."""
    datasets = {path: dataset or trained_on(path) for path in paths}
    if len(set(datasets.values())) > 1:
        listed = ", ".join(f"{path.name}: {name}" for path, name in datasets.items())
        raise ConfigError(f"the models were trained on different datasets ({listed}): "
                          "compare models of one dataset, or pass --data NAME to score all "
                          "against one")
    for name in set(datasets.values()):
        resolve_featnet(featnet, name)


def _write_report(out: Path, paths: Sequence[Path], *, num_samples: int, seed: int,
                  dataset: str | None, featnet: Any, use_memorisation: bool, use_cache: bool,
                  log: Callable[[str], None], progress: bool) -> None:
    """Score `paths` and write the report's files into the folder `out`."""
    from fashiongen.images import save_grid

    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for path, name in zip(paths, _unique_names(paths), strict=True):
        log(f"scoring {name} ({path}) on {num_samples} samples ...")
        row, grid, grid_rows = score_run(path, num_samples=num_samples, seed=seed,
                                         dataset=dataset, featnet=featnet,
                                         use_memorisation=use_memorisation, use_cache=use_cache,
                                         progress=progress)
        row["name"] = name
        grid_file = out / "images" / f"samples_{safe_name(name, fallback='run')}.png"
        save_grid(grid_file, grid, num_rows=grid_rows)
        row["grid"] = str(grid_file.relative_to(out))
        row["loss_curves"] = _loss_curves(Path(row["run_dir"]), out / "images", name)
        rows.append(row)
        log(f"  FID {_cell(row['fid'], '{:.2f}')}, "
            f"{_cell(row['sample_images_per_second'], '{:.0f}')} samples/s")
    plots.save_figure(quality_vs_cost(rows), out / "images" / PLOT_FILE)
    report = {
        "num_samples": num_samples,
        "seed": seed,
        "references": _references(rows),
        "machine": machine_info(),
        "columns": [key for key, _, _ in COLUMNS],
        "rows": rows,
        "quality_vs_cost": f"images/{PLOT_FILE}",
    }
    write_json(out / JSON_FILE, report)
    write_text_atomic(out / MARKDOWN_FILE, render_markdown(report))
    write_text_atomic(out / HTML_FILE, render_html(report, out))


def _loss_curves(run_dir: Path, images_dir: Path, name: str) -> str | None:
    """Copy (or draw) a run's loss curves into the report folder; its relative path."""
    target = images_dir / f"loss_{safe_name(name, fallback='run')}.png"
    if (run_dir / "loss_curves.png").is_file():
        shutil.copyfile(run_dir / "loss_curves.png", target)
    else:
        fig = plots.loss_curves(run_dir / "metrics.csv", title=name)
        if fig is None:
            return None
        plots.save_figure(fig, target)
    return f"{images_dir.name}/{target.name}"


def _references(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct (dataset, split, count, featnet) the rows were scored against."""
    seen = {}
    for row in rows:
        ev = row["evaluation"]
        key = (ev["dataset"], ev["ref"], ev["featnet"]["fingerprint"])
        seen.setdefault(key, {"dataset": ev["dataset"], "split": ev["ref"],
                              "count": ev["ref_count"], "featnet": ev["featnet"],
                              "kid_subset_size": ev["kid_subset_size"],
                              "kid_num_subsets": ev["kid_num_subsets"]})
    return list(seen.values())


def _preamble(report: dict[str, Any]) -> list[str]:
    """Sentences stating N, seed, references, feature nets and the machine."""
    lines = [f"Every run sampled afresh: N = {report['num_samples']} samples (balanced class "
             f"labels for conditional models), seed {report['seed']}, each run's own sampler "
             "settings."]
    for ref in report["references"]:
        net = ref["featnet"]
        acc = "unknown" if net["test_accuracy"] is None else f"{net['test_accuracy']:.4f}"
        lines.append(f"Reference: {ref['dataset']} {ref['split']} split, {ref['count']} images; "
                     f"feature net {net['name']} (test accuracy {acc}, fingerprint "
                     f"{net['fingerprint']}); KID over {ref['kid_num_subsets']} subsets of "
                     f"{ref['kid_subset_size']}.")
    m = report["machine"]
    lines.append(f"Sampling speed measured on {m['platform']}, {m['cpu_count']} CPUs, "
                 f"{m['torch_threads']} torch threads, torch {m['torch']}, {m['date']}. "
                 "Training time and images/s come from each run's summary.json.")
    lines.append("Metrics: FID (arXiv 1706.08500) and KID (arXiv 1801.01401), lower is better; "
                 "precision/recall (arXiv 1904.06991) and density/coverage (arXiv 2002.09797), "
                 "class recall and class coverage: the same within each class, averaged over "
                 "classes; class spread: mean pairwise feature distance within a class over "
                 "that of its real images (~1 for real data); "
                 "class entropy in nats (max ln 10 = 2.303); copy rate: samples nearer a "
                 "training image than 99% of real test images are. See docs/metrics.md.")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the table, then grids, loss curves and the plot as relative image links."""
    rows = report["rows"]
    header = [h for _, h, _ in COLUMNS]
    lines = ["# Model comparison", "", *[f"{s}  " for s in _preamble(report)], "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k), f) for k, _, f in COLUMNS) + " |")
    notes = [f"- {r['name']}: {n}" for r in rows for n in r["evaluation"]["notes"]]
    if notes:
        lines += ["", "Notes:", "", *notes]
    names = [r["name"] for r in rows]
    lines += ["", "## Samples", "", "| " + " | ".join(names) + " |", "|" + "---|" * len(rows),
              "| " + " | ".join(f"![{n}]({r['grid']})" for n, r in zip(names, rows, strict=True))
              + " |", "", "## Loss curves", ""]
    for row in rows:
        lines.append(f"![{row['name']}]({row['loss_curves']})" if row["loss_curves"]
                     else f"{row['name']}: no metrics.csv")
    lines += ["", "## Quality versus cost", "",
              f"![quality versus cost]({report['quality_vs_cost']})", ""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2), td:nth-child(7) { text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; } figcaption { text-align: center; font-weight: bold; }
img.pixel { image-rendering: pixelated; }
p.note { color: #555; font-size: 0.9em; }
"""


def render_html(report: dict[str, Any], folder: Path) -> str:
    """report.html: the same content with every image embedded; no external resources."""
    esc = html.escape
    rows = report["rows"]
    head = "".join(f"<th>{esc(h)}</th>" for _, h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(r.get(k), f))}</td>" for k, _, f in COLUMNS)
                   + "</tr>" for r in rows)
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>fashiongen model comparison</title>", f"<style>{HTML_STYLE}</style>",
             "</head><body>", "<h1>Model comparison</h1>"]
    parts += [f"<p>{esc(s)}</p>" for s in _preamble(report)]
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts += [f"<p class=\"note\">{esc(r['name'])}: {esc(n)}</p>" for r in rows
              for n in r["evaluation"]["notes"]]
    parts.append("<h2>Samples</h2><div class=\"grids\">")
    parts += [f"<figure><figcaption>{esc(r['name'])}</figcaption><img class=\"pixel\" "
              f"alt=\"samples of {esc(r['name'])}\" src=\"{_data_uri(folder / r['grid'])}\">"
              "</figure>" for r in rows]
    parts.append("</div><h2>Loss curves</h2><div class=\"grids\">")
    parts += [f"<figure><figcaption>{esc(r['name'])}</figcaption><img alt=\"loss curves of "
              f"{esc(r['name'])}\" src=\"{_data_uri(folder / r['loss_curves'])}\"></figure>"
              for r in rows if r["loss_curves"]]
    parts.append("</div><h2>Quality versus cost</h2>")
    parts.append(f"<img alt=\"quality versus cost\" "
                 f"src=\"{_data_uri(folder / report['quality_vs_cost'])}\">")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- every family, one budget


def family_configs(budget_minutes: float, out_dir: str | Path, *, seed: int = 0,
                   families: Sequence[str] | None = None, overrides: Sequence[str] = ()
                   ) -> dict[str, RunConfig]:
    """Each family's quick preset, stopped by `budget_minutes` of training, in `out_dir/FAMILY`.

    Epochs are set far beyond what the budget allows (`BUDGET_EPOCHS`), so the budget ends
    every run; `overrides` (`--set` syntax) apply to every family after that.
    """
    from fashiongen.models import MODELS

    if not budget_minutes or budget_minutes <= 0:
        raise ConfigError(f"the budget must be a positive number of minutes, got {budget_minutes}")
    configs = {}
    for family in families or sorted(MODELS):
        preset = PRESETS_DIR / f"{family}{QUICK_SUFFIX}.toml"
        if family not in MODELS or not preset.is_file():
            raise ConfigError(f"no quick preset for family {family!r} ({preset.name})")
        settings = [f"train.epochs={BUDGET_EPOCHS}", f"train.max_minutes={budget_minutes}",
                    f"seed={seed}", f"out_dir={json.dumps(str(Path(out_dir) / family))}",
                    *overrides]
        configs[family] = config_from_dict(merge_overrides(read_toml(preset), settings))
    return configs


def train_all(budget_minutes: float, out_dir: str | Path, *, seed: int = 0,
              families: Sequence[str] | None = None, overrides: Sequence[str] = (),
              num_samples: int = DEFAULT_NUM_SAMPLES, featnet: Any = None,
              progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train every family for `budget_minutes` of training time each, then compare them.

    Runs go to `out_dir/FAMILY`, the report to `out_dir/report`. A family whose run folder
    already holds a finished run is not trained again; an interrupted one is resumed, so
    rerunning the same command completes an interrupted comparison.

    Returns:
        The path of `report.html`.
    """
    from fashiongen.training import train

    configs = family_configs(budget_minutes, out_dir, seed=seed, families=families,
                             overrides=overrides)
    for cfg in configs.values():  # the report needs them: fail now, not after the training
        resolve_featnet(featnet, cfg.data.name)
    log(f"training {len(configs)} families for {budget_minutes:g} min each "
        f"(about {len(configs) * budget_minutes:g} min in all), seed {seed}")
    runs = []
    for family, cfg in configs.items():
        run = Path(cfg.out_dir)
        if (run / "summary.json").is_file() and (run / "final").is_dir():
            log(f"{family}: already trained in {run}, kept")
        else:
            resume = (run / "final").is_dir() or bool(list_checkpoints(run))
            log(f"{family}: {'resuming' if resume else 'training'} in {run}")
            train(cfg, resume=resume, progress=progress)
        runs.append(run)
    report = Path(out_dir) / "report"
    return compare_runs(runs, report, num_samples=num_samples, seed=seed, featnet=featnet,
                        overwrite=(report / JSON_FILE).is_file(), log=log,  # its own, redrawn
                        progress=progress)
