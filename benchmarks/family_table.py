"""Quality of trained runs at one N and seed: every family, the hybrid sweep, D reversion.

    python benchmarks/family_table.py --runs runs/gpu --num-samples 2000 --out docs/results

Reads run folders named after their family (dcgan, gan, vae, ddpm, hybrid, and the
D-reversion ablation pair abl-strongd-norev / abl-strongd-rev), samples each with balanced
class labels (conditional models), scores the samples with `fashiongen.metrics.evaluate`
against the real test set, and writes `family_table.json` and `family_table.md`. Sampling
speed is measured on this machine's CPU in the same run (seconds per 1000 images).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import torch

from fashiongen.checkpoint import load_model
from fashiongen.data import load_dataset
from fashiongen.evaluation import draw_and_score
from fashiongen.metrics import evaluate

COLUMNS = [
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "density",
    "coverage",
    "class_entropy",
    "modes_missing",
    "conditional_accuracy",
    "copy_rate",
    "per_class_recall",
    "per_class_coverage",
    "intra_class_spread",
]


def score(model, sampling, num_samples: int, seed: int) -> dict:
    result, drawn = draw_and_score(model, num_samples, sampling=sampling, seed=seed)
    row = {k: result[k] for k in COLUMNS}
    row["seconds_per_1000"] = 1000 * drawn.seconds / num_samples
    row["num_samples"] = num_samples
    return row


def real_floor(num_samples: int, seed: int) -> dict:
    """Real training images scored like samples: the floor each metric can reach at this N."""
    train = load_dataset("fashion-mnist", "train")
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    chosen = index[:num_samples]
    result = evaluate(train.images[chosen], labels=train.labels[chosen], seed=seed)
    return {k: result[k] for k in COLUMNS} | {"num_samples": num_samples}


def markdown(rows: list[tuple[str, dict]], extra: list[str]) -> str:
    header = [
        "run",
        *extra,
        "FID",
        "KID",
        "prec.",
        "recall",
        "density",
        "cover.",
        "entropy",
        "missing",
        "cond. acc.",
        "copy",
        "s/1000 img",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows:
        cells = [name, *[str(r.get(k, "")) for k in extra]]
        cells += [
            f"{r['fid']:.2f}",
            f"{r['kid_mean']:.4f}",
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['density']:.3f}",
            f"{r['coverage']:.3f}",
            f"{r['class_entropy']:.3f}",
            str(r["modes_missing"]),
            "" if r["conditional_accuracy"] is None else f"{r['conditional_accuracy']:.3f}",
            f"{r['copy_rate']:.4f}",
            f"{r.get('seconds_per_1000', float('nan')):.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    n, seed = args.num_samples, args.seed
    out: dict = {"num_samples": n, "seed": seed, "ref": "fashion-mnist test (10,000)"}

    out["real_train_vs_test"] = real_floor(n, seed)
    print("floor", out["real_train_vs_test"], flush=True)

    families = []
    for name in ("gan", "dcgan", "vae", "ddpm", "hybrid"):
        model, checkpoint = load_model(args.runs / name)
        row = score(model, checkpoint.config.sample, n, seed)
        row["sampling"] = (
            dataclasses.asdict(checkpoint.config.sample) if model.sampling_fields else None
        )
        families.append((name, row))
        print(name, row, flush=True)
    out["families"] = dict(families)

    hybrid, checkpoint = load_model(args.runs / "hybrid")
    ddpm, ddpm_checkpoint = load_model(args.runs / "ddpm")
    sweep = []
    base = checkpoint.config.sample
    for strength, steps in ((0.0, 1), (0.1, 5), (0.25, 5), (0.25, 10), (0.4, 10), (0.4, 20)):
        sampling = dataclasses.replace(base, sampler="ddim", strength=strength, num_steps=steps)
        row = score(hybrid, sampling, n, seed)
        row["nfe"] = hybrid.num_network_evaluations(sampling)
        name = (
            "hybrid GAN draft alone"
            if strength == 0
            else f"hybrid strength {strength}, DDIM {steps}"
        )
        sweep.append((name, row))
        print(name, row, flush=True)
    for sampler, steps in (
        ("ddim", 6),
        ("dpmpp_2m", 6),
        ("ddim", 11),
        ("dpmpp_2m", 11),
        ("dpmpp_2m", 21),
    ):
        sampling = dataclasses.replace(
            ddpm_checkpoint.config.sample, sampler=sampler, num_steps=steps
        )
        row = score(ddpm, sampling, n, seed)
        row["nfe"] = steps
        sweep.append((f"ddpm {sampler} {steps}", row))
        print(sweep[-1], flush=True)
    out["hybrid_sweep"] = dict(sweep)

    ablation = []
    for name in ("abl-strongd-norev", "abl-strongd-rev"):
        run = args.runs / name
        if not run.exists():
            continue
        model, checkpoint = load_model(run)
        row = score(model, checkpoint.config.sample, n, seed)
        with open(run / "metrics.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        row["reversions"] = int(sum(float(r.get("event_d_reversion") or 0) for r in rows))
        ablation.append((name, row))
        print(name, row, flush=True)
    out["d_reversion_ablation"] = dict(ablation)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "family_table.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [
        f"N = {n} samples per row, seed {seed}, reference: Fashion-MNIST test set; "
        f"features: the shipped Fashion-MNIST feature network.",
        "",
        "## Real data (the floor at this N)",
        "",
        markdown([("real train images", out["real_train_vs_test"])], []),
        "",
        "## Families (full presets)",
        "",
        markdown(families, []),
        "",
        "## Hybrid vs DDPM at equal network evaluations",
        "",
        markdown(sweep, ["nfe"]),
        "",
        "## Discriminator reversion (strong-D DCGAN, 4 epochs, same seed)",
        "",
        markdown(ablation, ["reversions"]),
        "",
    ]
    (args.out / "family_table.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
