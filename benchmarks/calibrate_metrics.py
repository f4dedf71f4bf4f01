"""Calibrate the metrics on real Fashion-MNIST: what every number looks like for real data.

    nohup .venv/bin/python benchmarks/calibrate_metrics.py --json calibration.json > cal.log &

Scores sets of real, degraded and degenerate images with `fashiongen.metrics.evaluate` (the
shipped Fashion-MNIST feature network, KID over 100 subsets of up to 1000, seed 0), one
thread, and prints a Markdown table (the one in docs/metrics.md):
  floor       N random training images against the test split, N = 1000, 2000, 5000, 10000:
              the best a model can score at that N; being training images, their copy rate is
              ~100%, which calibrates the copy detector
  held-out    2000 test images against the training split (`--ref train`): copy rate ~1% by
              construction of the threshold
  itself      the whole test split against itself: FID and KID ~0
  noise       2000 training images plus Gaussian pixel noise, sigma 0.05 ... 0.4 ([0, 1] units)
  blur        2000 training images through Pillow's Gaussian blur, radius 0.5, 1, 2
  one class   2000 training images of one class (trouser)
Takes a few minutes on one CPU thread; the first run also computes and caches the training
split's reference statistics.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed = args.seed
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
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
    table = markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "threads": args.threads, "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
