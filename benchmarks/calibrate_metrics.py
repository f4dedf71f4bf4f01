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
then the per-class values of the first row. `--table ladder`, the degradation ladder: N = 2000
test images (seed 0) against the test split, each degradation of `fashiongen.metrics.
degradations` at four strengths (`LADDER`), beside the real floor (2000 clean test images, 5
seeds: mean, spread, max); it checks that FID rises with each strength and that each mildest
rung is above the floor's maximum, and writes both verdicts into the table. The training-copy
rungs replace a share of the set with training images: real images, so FID stays at the floor
and the copy rate rises instead. `--featnet FILE` scores with another feature net (the
agreement benchmark, `featnet_agreement.py`, reuses `ladder_rows`). `--table all` (default)
prints the main and classes tables. The main table takes a few minutes on one CPU thread, the
classes table about 20 s, the ladder about 4 minutes; the first run of any also computes and
caches the reference statistics it needs (the training split's: 2-3 minutes).
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
from fashiongen.metrics import degradations, evaluate
from fashiongen.nets.featnet import FeatNet, load_featnet_file

FLOOR_SIZES = (1000, 2000, 5000, 10000)
NUM_SAMPLES = 2000
NOISE_SIGMAS = (0.05, 0.1, 0.2, 0.4)
BLUR_RADII = (0.5, 1.0, 2.0)
ONE_CLASS = 1  # trouser
REPEATS = (1, 3, 10)  # distinct images per class in the repeated-image rows
NEAR_DUPLICATE_SIGMA = 0.05
CLASS_NOISE_SIGMA, CLASS_BLUR_RADIUS = 0.1, 1.0
COLUMNS = (
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "density",
    "coverage",
    "class_entropy",
    "modes_missing",
    "copy_rate",
)


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
    out = np.stack(
        [
            np.asarray(Image.fromarray(img[0].numpy()).filter(ImageFilter.GaussianBlur(radius)))
            for img in images
        ]
    )
    return torch.from_numpy(out).unsqueeze(1)


def row(name: str, images: torch.Tensor, *, ref: str = "test", seed: int = 0) -> dict:
    started = time.perf_counter()
    result = evaluate(images, ref=ref, seed=seed)
    out = {
        "set": name,
        "num_samples": len(images),
        "ref": ref,
        "ref_count": result["ref_count"],
        **{k: result[k] for k in COLUMNS},
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(out), flush=True)
    return out


def markdown(rows: list[dict]) -> str:
    header = [
        "set",
        "N",
        "ref",
        "FID",
        "KID",
        "precision",
        "recall",
        "density",
        "coverage",
        "entropy",
        "missing",
        "copy rate",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["set"],
                    str(r["num_samples"]),
                    f"{r['ref']} ({r['ref_count']})",
                    f"{r['fid']:.3f}",
                    f"{r['kid_mean']:.5f}",
                    f"{r['precision']:.3f}",
                    f"{r['recall']:.3f}",
                    f"{r['density']:.3f}",
                    f"{r['coverage']:.3f}",
                    f"{r['class_entropy'] + 0.0:.3f}",
                    str(r["modes_missing"]),
                    f"{r['copy_rate']:.2%}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main_rows(train, test, seed: int) -> list[dict]:
    """The main table: floors, held-out, itself, noise, blur, one class."""
    base = subset(train.images, NUM_SAMPLES, seed)
    rows = [
        row(f"real train, N={n}", subset(train.images, n, seed), seed=seed) for n in FLOOR_SIZES
    ]
    rows.append(
        row("real test (held out)", subset(test.images, NUM_SAMPLES, seed), ref="train", seed=seed)
    )
    rows.append(row("test split vs itself", test.images, seed=seed))
    rows += [row(f"noise sigma={s}", add_noise(base, s, seed), seed=seed) for s in NOISE_SIGMAS]
    rows += [row(f"blur radius={r}", blur(base, r), seed=seed) for r in BLUR_RADII]
    one_class = train.images[train.labels == ONE_CLASS]
    rows.append(
        row(
            f"one class ({train.class_names[ONE_CLASS]})",
            subset(one_class, NUM_SAMPLES, seed),
            seed=seed,
        )
    )
    return rows


# ------------------------------------------------------------------ the per-class metrics

CLASS_COLUMNS = (
    "recall",
    "coverage",
    "conditional_accuracy",
    "per_class_recall",
    "per_class_coverage",
    "intra_class_spread",
    "per_class_recall_by_class",
    "per_class_coverage_by_class",
    "intra_class_spread_by_class",
    "per_class_num_samples",
    "notes",
)


def balanced(
    images: torch.Tensor, labels: torch.Tensor, num: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num` images, as many of each class, drawn without replacement, sorted by class."""
    num_classes = int(labels.max()) + 1
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    chosen = torch.cat(
        [order[labels[order] == c][: num // num_classes] for c in range(num_classes)]
    )
    return images[chosen], labels[chosen]


def repeat_per_class(images: torch.Tensor, labels: torch.Tensor, distinct: int) -> torch.Tensor:
    """Each class's images replaced by its first `distinct` ones, in turn (labels unchanged)."""
    out = images.clone()
    for c in labels.unique():
        rows = torch.nonzero(labels == c).flatten()
        out[rows] = images[rows[torch.arange(len(rows)) % distinct]]
    return out


def class_row(
    name: str, images: torch.Tensor, labels: torch.Tensor | None, *, seed: int, ref: str = "test"
) -> dict:
    started = time.perf_counter()
    result = evaluate(images, labels=labels, ref=ref, seed=seed, use_memorisation=False)
    out = {
        "set": name,
        "num_samples": len(images),
        "classes": "predicted" if labels is None else "asked",
        "ref": ref,
        "ref_count": result["ref_count"],
        **{k: result[k] for k in CLASS_COLUMNS},
        "class_names": result["class_names"],
        "per_class_seconds": result["seconds"]["per_class"],
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(out), flush=True)
    return out


def class_rows(train, test, seed: int) -> list[dict]:
    """The per-class table (see the module docstring)."""
    base, labels = balanced(train.images, train.labels, NUM_SAMPLES, seed)
    rows = [
        class_row("real train", base, labels, seed=seed),
        class_row("real train, predicted classes", base, None, seed=seed),
        class_row(
            "real test (held out)",
            *balanced(test.images, test.labels, NUM_SAMPLES, seed),
            ref="train",
            seed=seed,
        ),
        class_row(
            f"noise sigma={CLASS_NOISE_SIGMA}",
            add_noise(base, CLASS_NOISE_SIGMA, seed),
            labels,
            seed=seed,
        ),
        class_row(
            f"blur radius={CLASS_BLUR_RADIUS}", blur(base, CLASS_BLUR_RADIUS), labels, seed=seed
        ),
    ]
    rows += [
        class_row(
            f"{m} image{'s' if m > 1 else ''} per class",
            repeat_per_class(base, labels, m),
            labels,
            seed=seed,
        )
        for m in REPEATS
    ]
    rows.append(
        class_row(
            f"3 images per class + noise sigma={NEAR_DUPLICATE_SIGMA}",
            add_noise(repeat_per_class(base, labels, 3), NEAR_DUPLICATE_SIGMA, seed),
            labels,
            seed=seed,
        )
    )
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    rows.append(class_row("labels shuffled", base, shuffled, seed=seed))
    one_class = train.images[train.labels == ONE_CLASS]
    rows.append(
        class_row(
            f"one class ({train.class_names[ONE_CLASS]}), predicted classes",
            subset(one_class, NUM_SAMPLES, seed),
            None,
            seed=seed,
        )
    )
    return rows


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "—" if value is None else fmt.format(value + 0.0)


def class_markdown(rows: list[dict]) -> str:
    header = [
        "set",
        "classes",
        "ref",
        "recall",
        "coverage",
        "cond. acc.",
        "class recall",
        "class coverage",
        "class spread",
        "classes scored",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        scored = sum(v is not None for v in r["per_class_recall_by_class"])
        lines.append(
            "| "
            + " | ".join(
                [
                    r["set"],
                    r["classes"],
                    f"{r['ref']} ({r['ref_count']})",
                    _num(r["recall"]),
                    _num(r["coverage"]),
                    _num(r["conditional_accuracy"]),
                    _num(r["per_class_recall"]),
                    _num(r["per_class_coverage"]),
                    _num(r["intra_class_spread"]),
                    f"{scored}/{len(r['per_class_recall_by_class'])}",
                ]
            )
            + " |"
        )
    first = rows[0]
    lines += [
        "",
        f"Per class, {first['set']} ({first['classes']} classes):",
        "",
        "| class | " + " | ".join(first["class_names"]) + " |",
        "|" + "---|" * (len(first["class_names"]) + 1),
    ]
    for key, label in (
        ("per_class_recall_by_class", "recall"),
        ("per_class_coverage_by_class", "coverage"),
        ("intra_class_spread_by_class", "spread"),
    ):
        lines.append(f"| {label} | " + " | ".join(_num(v) for v in first[key]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the degradation ladder

LADDER_SEEDS = (0, 1, 2, 3, 4)  # of the real floor
MISSING_CELL = "—"
LADDER_COLUMNS = (
    "fid",
    "laplacian_ratio",
    "kid_mean",
    "precision",
    "recall",
    "coverage",
    "per_class_recall",
    "copy_rate",
)
# degradation -> (strength name, strengths from mildest to strongest)
LADDER: dict[str, tuple[str, tuple[float, ...]]] = {
    "gaussian noise": ("sigma", (0.02, 0.05, 0.1, 0.2)),
    "speckle": ("sigma", (0.05, 0.1, 0.2, 0.4)),
    "salt and pepper": ("share", (0.005, 0.01, 0.03, 0.1)),
    "blur": ("radius", (0.5, 0.75, 1.0, 2.0)),
    "checkerboard": ("amplitude", (0.02, 0.04, 0.08, 0.16)),
    "jpeg": ("quality", (75, 50, 25, 10)),
    "posterise": ("levels", (16, 8, 4, 2)),
    "contrast": ("factor", (0.95, 0.9, 0.8, 0.6)),
    "brightness": ("shift", (0.02, 0.05, 0.1, 0.2)),
    "intra-class collapse": ("images per class", (100, 10, 3, 1)),
    "class imbalance": ("most / least frequent", (2, 4, 10, 100)),
    "training copies": ("share", (0.1, 0.25, 0.5, 1.0)),
}
PIXEL_DEGRADATIONS = {
    "gaussian noise": degradations.gaussian_noise,
    "speckle": degradations.speckle,
    "salt and pepper": degradations.salt_and_pepper,
    "blur": degradations.blur,
    "checkerboard": degradations.checkerboard,
    "jpeg": degradations.jpeg,
    "posterise": degradations.posterise,
    "contrast": degradations.contrast,
    "brightness": degradations.brightness,
}


def test_subset(test, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`NUM_SAMPLES` test images and their labels, drawn without replacement."""
    order = torch.randperm(len(test.images), generator=generator)[:NUM_SAMPLES]
    return test.images[order], test.labels[order]


def degraded_set(
    name: str, strength: float, test, train, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2000 images (and labels) of one ladder rung, from the seed's test subset."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = test_subset(test, generator)
    if name in PIXEL_DEGRADATIONS:
        return PIXEL_DEGRADATIONS[name](images, strength, generator), labels
    if name == "intra-class collapse":
        return degradations.collapse_per_class(images, labels, int(strength)), labels
    if name == "class imbalance":
        chosen = degradations.imbalanced_indices(test.labels, NUM_SAMPLES, strength, generator)
        return test.images[chosen], test.labels[chosen]
    num_copies = round(strength * NUM_SAMPLES)  # training copies
    copies = torch.randperm(len(train.images), generator=generator)[:num_copies]
    return (
        torch.cat([train.images[copies], images[num_copies:]]),
        torch.cat([train.labels[copies], labels[num_copies:]]),
    )


def ladder_row(
    name: str,
    strength: float | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    featnet: FeatNet | None,
    seed: int,
    use_memorisation: bool,
) -> dict:
    started = time.perf_counter()
    result = evaluate(
        images, labels=labels, featnet=featnet, seed=seed, use_memorisation=use_memorisation
    )
    out = {
        "degradation": name,
        "strength": strength,
        "num_samples": len(images),
        **{k: result[k] for k in LADDER_COLUMNS},
        "metric": result["metric"]["name"],
        "metric_version": result["metric"]["version"],
        "featnet": result["featnet"]["fingerprint"],
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(out), flush=True)
    return out


def ladder_rows(test, train, *, featnet: FeatNet | None = None, seed: int = 0) -> list[dict]:
    """The real floor over `LADDER_SEEDS`, then every rung of `LADDER`."""
    rows = [
        ladder_row(
            "real (floor)",
            None,
            *test_subset(test, torch.Generator().manual_seed(s)),
            featnet=featnet,
            seed=s,
            use_memorisation=False,
        )
        for s in LADDER_SEEDS
    ]
    for name, (_, strengths) in LADDER.items():
        rows += [
            ladder_row(
                name,
                strength,
                *degraded_set(name, strength, test, train, seed),
                featnet=featnet,
                seed=seed,
                use_memorisation=name == "training copies",
            )
            for strength in strengths
        ]
    return rows


def ladder_markdown(rows: list[dict]) -> str:
    """The ladder table, with the floor's spread and each degradation's verdicts: FID rises
    with the strength and its mildest rung is above the floor's maximum (for the training
    copies, which are real images, the copy rate rises and its mildest rung is above 1%)."""
    floor = np.array([r["fid"] for r in rows if r["strength"] is None])
    lines = [
        f"Real floor (N = {NUM_SAMPLES}, {len(floor)} seeds): FID {floor.mean():.3f} "
        f"+/- {floor.std(ddof=1):.3f} (max {floor.max():.3f})",
        "",
        "| degradation | strength | FID | HF ratio | KID | precision | recall | coverage | "
        "class recall | copy rate | monotone | mildest > floor |",
        "|" + "---|" * 12,
    ]
    for name, (unit, _) in LADDER.items():
        rungs = [r for r in rows if r["degradation"] == name]
        fids = [r["fid"] for r in rungs]
        tracked = [r["copy_rate"] for r in rungs] if name == "training copies" else fids
        monotone = all(b > a for a, b in zip(tracked, tracked[1:], strict=False))
        above = (tracked[0] > 0.01) if name == "training copies" else fids[0] > floor.max()
        for i, r in enumerate(rungs):
            verdicts = (
                ["yes" if monotone else "NO", "yes" if above else "NO"] if i == 0 else ["", ""]
            )
            copy = MISSING_CELL if r["copy_rate"] is None else f"{r['copy_rate']:.1%}"
            lines.append(
                "| "
                + " | ".join(
                    [
                        name if i == 0 else "",
                        f"{unit} {r['strength']:g}",
                        f"{r['fid']:.3f}",
                        f"{r['laplacian_ratio']:.2f}",
                        f"{r['kid_mean']:.4f}",
                        f"{r['precision']:.3f}",
                        f"{r['recall']:.3f}",
                        f"{r['coverage']:.3f}",
                        _num(r["per_class_recall"]),
                        copy,
                        *verdicts,
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", choices=("all", "main", "classes", "ladder"), default="all")
    parser.add_argument("--featnet", type=Path, help="score with this feature net file")
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
    if args.table == "ladder":
        featnet = load_featnet_file(args.featnet) if args.featnet else None
        out["ladder_rows"] = ladder_rows(test, train, featnet=featnet, seed=seed)
        print(ladder_markdown(out["ladder_rows"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
