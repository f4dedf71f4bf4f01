"""Calibrate the metrics on real Fashion-MNIST: what every number looks like for real data.

    nohup .venv/bin/python benchmarks/calibrate_metrics.py --json calibration.json > cal.log &
    .venv/bin/python benchmarks/calibrate_metrics.py --table classes --json classes.json

Scores sets of real, degraded and degenerate images with `fashiongen.metrics.evaluate` (the
shipped Fashion-MNIST feature network, KID over 100 subsets of up to 1000, seed 0), one
thread, and prints Markdown tables (the ones in docs/metrics.md). `--table main`:
  floor       N random training images against the test split, N = 1000, 2000, 5000, 10000:
              the best a model can score at that N; being training images, their copy rate is
              ~100%, which calibrates the copy detector
  held-out    2000 test images against the training split (`--ref train`): copy rate ~1% by
              construction of the threshold
  itself      the whole test split against itself: FID and KID ~0
  noise       2000 training images plus Gaussian pixel noise, sigma 0.05 ... 0.4 ([0, 1] units)
  blur        2000 training images through Pillow's Gaussian blur, radius 0.5, 1, 2
  one class   2000 training images of one class (trouser)
`--table classes`, the per-class metrics: 2000 training images, 200 of each class, against
the test split, each passed with the class it stands for (as a conditional model's samples
are), except where the feature net's predicted class is said:
  real        the images themselves, with their labels, and without (predicted classes);
              2000 test images (200 a class) against the training split
  degraded    Gaussian noise sigma 0.1, blur radius 1
  m per class each class's 200 samples are m of its images repeated, m = 1, 3, 10; and 3 of
              them, each copy with its own noise of sigma 0.05 (near-duplicates)
  shuffled    the images with their labels permuted: a model that ignores its labels
  one class   2000 trousers, predicted classes
then the per-class values of the first row. `--table all` (default) prints both. The main
table takes a few minutes on one CPU thread, the classes table about 20 s; the first run of
either also computes and caches the training split's reference statistics (2-3 minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from fashiongen.data import load_dataset
from fashiongen.metrics import evaluate

FLOOR_SIZES = (1000, 2000, 5000, 10000)
NUM_SAMPLES = 2000
NOISE_SIGMAS = (0.05, 0.1, 0.2, 0.4)
BLUR_RADII = (0.5, 1.0, 2.0)
ONE_CLASS = 1  # trouser
REPEATS = (1, 3, 10)  # distinct images per class in the repeated-image rows
NEAR_DUPLICATE_SIGMA = 0.05
CLASS_NOISE_SIGMA, CLASS_BLUR_RADIUS = 0.1, 1.0
COLUMNS = ("fid", "kid_mean", "precision", "recall", "density", "coverage", "class_entropy",
           "modes_missing", "copy_rate")


def subset(images: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """`num` images drawn without replacement, reproducibly."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:num]]


def add_noise(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """uint8 images plus N(0, sigma^2) noise in [0, 1] pixel units, clipped and rounded."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return ((images.float() / 255 + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def blur(images: torch.Tensor, radius: float) -> torch.Tensor:
    """Pillow's Gaussian blur of every (1, H, W) uint8 image."""
    out = np.stack([np.asarray(Image.fromarray(img[0].numpy()).filter(
        ImageFilter.GaussianBlur(radius))) for img in images])
    return torch.from_numpy(out).unsqueeze(1)


def row(name: str, images: torch.Tensor, *, ref: str = "test", seed: int = 0) -> dict:
    started = time.perf_counter()
    result = evaluate(images, ref=ref, seed=seed)
    out = {"set": name, "num_samples": len(images), "ref": ref, "ref_count": result["ref_count"],
           **{k: result[k] for k in COLUMNS}, "seconds": time.perf_counter() - started}
    print(json.dumps(out), flush=True)
    return out


def markdown(rows: list[dict]) -> str:
    header = ["set", "N", "ref", "FID", "KID", "precision", "recall", "density", "coverage",
              "entropy", "missing", "copy rate"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["set"], str(r["num_samples"]), f"{r['ref']} ({r['ref_count']})", f"{r['fid']:.3f}",
            f"{r['kid_mean']:.5f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
            f"{r['density']:.3f}", f"{r['coverage']:.3f}", f"{r['class_entropy'] + 0.0:.3f}",
            str(r["modes_missing"]), f"{r['copy_rate']:.2%}"]) + " |")
    return "\n".join(lines)


def main_rows(train, test, seed: int) -> list[dict]:
    """The main table: floors, held-out, itself, noise, blur, one class."""
    base = subset(train.images, NUM_SAMPLES, seed)
    rows = [row(f"real train, N={n}", subset(train.images, n, seed), seed=seed)
            for n in FLOOR_SIZES]
    rows.append(row("real test (held out)", subset(test.images, NUM_SAMPLES, seed), ref="train",
                    seed=seed))
    rows.append(row("test split vs itself", test.images, seed=seed))
    rows += [row(f"noise sigma={s}", add_noise(base, s, seed), seed=seed) for s in NOISE_SIGMAS]
    rows += [row(f"blur radius={r}", blur(base, r), seed=seed) for r in BLUR_RADII]
    one_class = train.images[train.labels == ONE_CLASS]
    rows.append(row(f"one class ({train.class_names[ONE_CLASS]})",
                    subset(one_class, NUM_SAMPLES, seed), seed=seed))
    return rows


# ------------------------------------------------------------------ the per-class metrics

CLASS_COLUMNS = ("recall", "coverage", "conditional_accuracy", "per_class_recall",
                 "per_class_coverage", "intra_class_spread", "per_class_recall_by_class",
                 "per_class_coverage_by_class", "intra_class_spread_by_class",
                 "per_class_num_samples", "notes")


def balanced(images: torch.Tensor, labels: torch.Tensor, num: int, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """`num` images, as many of each class, drawn without replacement, sorted by class."""
    num_classes = int(labels.max()) + 1
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    chosen = torch.cat([order[labels[order] == c][:num // num_classes]
                        for c in range(num_classes)])
    return images[chosen], labels[chosen]


def repeat_per_class(images: torch.Tensor, labels: torch.Tensor, distinct: int) -> torch.Tensor:
    """Each class's images replaced by its first `distinct` ones, in turn (labels unchanged)."""
    out = images.clone()
    for c in labels.unique():
        rows = torch.nonzero(labels == c).flatten()
        out[rows] = images[rows[torch.arange(len(rows)) % distinct]]
    return out


def class_row(name: str, images: torch.Tensor, labels: torch.Tensor | None, *, seed: int,
              ref: str = "test") -> dict:
    started = time.perf_counter()
    result = evaluate(images, labels=labels, ref=ref, seed=seed, use_memorisation=False)
    out = {"set": name, "num_samples": len(images),
           "classes": "predicted" if labels is None else "asked", "ref": ref,
           "ref_count": result["ref_count"], **{k: result[k] for k in CLASS_COLUMNS},
           "class_names": result["class_names"],
           "per_class_seconds": result["seconds"]["per_class"],
           "seconds": time.perf_counter() - started}
    print(json.dumps(out), flush=True)
    return out


def class_rows(train, test, seed: int) -> list[dict]:
    """The per-class table (see the module docstring)."""
    base, labels = balanced(train.images, train.labels, NUM_SAMPLES, seed)
    rows = [class_row("real train", base, labels, seed=seed),
            class_row("real train, predicted classes", base, None, seed=seed),
            class_row("real test (held out)", *balanced(test.images, test.labels, NUM_SAMPLES,
                                                        seed), ref="train", seed=seed),
            class_row(f"noise sigma={CLASS_NOISE_SIGMA}",
                      add_noise(base, CLASS_NOISE_SIGMA, seed), labels, seed=seed),
            class_row(f"blur radius={CLASS_BLUR_RADIUS}", blur(base, CLASS_BLUR_RADIUS),
                      labels, seed=seed)]
    rows += [class_row(f"{m} image{'s' if m > 1 else ''} per class",
                       repeat_per_class(base, labels, m), labels, seed=seed) for m in REPEATS]
    rows.append(class_row(f"3 images per class + noise sigma={NEAR_DUPLICATE_SIGMA}",
                          add_noise(repeat_per_class(base, labels, 3), NEAR_DUPLICATE_SIGMA,
                                    seed), labels, seed=seed))
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    rows.append(class_row("labels shuffled", base, shuffled, seed=seed))
    one_class = train.images[train.labels == ONE_CLASS]
    rows.append(class_row(f"one class ({train.class_names[ONE_CLASS]}), predicted classes",
                          subset(one_class, NUM_SAMPLES, seed), None, seed=seed))
    return rows


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "—" if value is None else fmt.format(value + 0.0)


def class_markdown(rows: list[dict]) -> str:
    header = ["set", "classes", "ref", "recall", "coverage", "cond. acc.", "class recall",
              "class coverage", "class spread", "classes scored"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        scored = sum(v is not None for v in r["per_class_recall_by_class"])
        lines.append("| " + " | ".join([
            r["set"], r["classes"], f"{r['ref']} ({r['ref_count']})", _num(r["recall"]),
            _num(r["coverage"]), _num(r["conditional_accuracy"]), _num(r["per_class_recall"]),
            _num(r["per_class_coverage"]), _num(r["intra_class_spread"]),
            f"{scored}/{len(r['per_class_recall_by_class'])}"]) + " |")
    first = rows[0]
    lines += ["", f"Per class, {first['set']} ({first['classes']} classes):", "",
              "| class | " + " | ".join(first["class_names"]) + " |",
              "|" + "---|" * (len(first["class_names"]) + 1)]
    for key, label in (("per_class_recall_by_class", "recall"),
                       ("per_class_coverage_by_class", "coverage"),
                       ("intra_class_spread_by_class", "spread")):
        lines.append(f"| {label} | " + " | ".join(_num(v) for v in first[key]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", choices=("all", "main", "classes"), default="all")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed = args.seed
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    out: dict = {"seed": seed, "threads": args.threads}
    if args.table in ("all", "main"):
        out["rows"] = main_rows(train, test, seed)
        print(markdown(out["rows"]))
    if args.table in ("all", "classes"):
        out["class_rows"] = class_rows(train, test, seed)
        print(class_markdown(out["class_rows"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
