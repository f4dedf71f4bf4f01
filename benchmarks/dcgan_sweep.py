"""DCGAN discriminator sweep: which D keeps the conditional generator from collapsing?

    python benchmarks/dcgan_sweep.py --epochs 4 --num-samples 2000 --out runs/sweep

Trains the dcgan preset with each variant for the same epochs and seed, then scores 2000
balanced samples with the feature-network metrics (no memorisation check). Prints a
Markdown table and writes sweep.json; the best variant's overrides are printed last.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fashiongen.checkpoint import load_model
from fashiongen.cli import main as cli
from fashiongen.generate import generate
from fashiongen.metrics import evaluate

VARIANTS = {
    "preset (d32, dropout 0.3, mbstd)": [],
    "d64, dropout 0": ["model.d_width=64", "model.dropout=0.0"],
    "d64, dropout 0, spectral norm": ["model.d_width=64", "model.dropout=0.0",
                                      "model.use_spectral_norm=true"],
    "d64, dropout 0, no mbstd": ["model.d_width=64", "model.dropout=0.0",
                                 "model.use_minibatch_std=false"],
    "g64 d64, dropout 0.3": ["model.g_width=64", "model.d_width=64"],
    "unconditional preset": ["model.num_classes=0"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args()
    results = {}
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        run = args.out / f"v{i}"
        sets = [x for o in overrides for x in ("--set", o)]
        cli(["train", "--config", "dcgan", "--epochs", str(args.epochs), "--out", str(run),
             "--no-progress", *sets])
        model, _ = load_model(run)
        n = args.num_samples
        labels = torch.arange(n) % model.num_classes if model.num_classes else None
        r = evaluate(generate(model, n, labels=labels, seed=0), labels=labels,
                     use_memorisation=False)
        results[name] = {"overrides": overrides, **{k: r[k] for k in (
            "fid", "precision", "recall", "coverage", "modes_missing")}}
        print(name, results[name], flush=True)
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2))
    print("| variant | FID | precision | recall | coverage | missing |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['fid']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['coverage']:.3f} | {r['modes_missing']} |")
    conditional = {k: v for k, v in results.items() if "unconditional" not in k}
    best = min(conditional, key=lambda k: conditional[k]["fid"])
    print("BEST", " ".join(conditional[best]["overrides"]))


if __name__ == "__main__":
    main()
