"""Preset sweeps: which settings a preset should take, each variant trained the same way.

    python benchmarks/preset_sweep.py --sweep dcgan-discriminator --epochs 4 --out runs/sweep
    python benchmarks/preset_sweep.py --sweep dcgan-loss --cpu-minutes 5 --out runs/sweep-loss
    python benchmarks/preset_sweep.py --sweep vae-prior --cpu-minutes 5 --out runs/sweep-vae

Trains the sweep's preset with each variant for the same epochs (or the same
budget of CPU time on one thread, `train.clock = "cpu"`) and seed, then scores 2000 balanced
samples with the feature-network metrics (no memorisation check). Writes the table to
RESULTS/sweep_NAME.{json,md} (default benchmarks/results) and prints the best conditional
variant's overrides last. Variants already trained in OUT are scored again, not retrained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fashiongen.checkpoint import load_model
from fashiongen.cli import main as cli
from fashiongen.generate import generate
from fashiongen.metrics import evaluate

SWEEPS = {  # name -> (preset, {variant: overrides})
    # the first session's sweep, at 4 epochs of the dcgan preset (no .md: older script)
    "dcgan-discriminator": ("dcgan", {
        "preset (d32, dropout 0.3, mbstd)": [],
        "d64, dropout 0": ["model.d_width=64", "model.dropout=0.0"],
        "d64, dropout 0, spectral norm": ["model.d_width=64", "model.dropout=0.0",
                                          "model.use_spectral_norm=true"],
        "d64, dropout 0, no mbstd": ["model.d_width=64", "model.dropout=0.0",
                                     "model.use_minibatch_std=false"],
        "g64 d64, dropout 0.3": ["model.g_width=64", "model.d_width=64"],
        "unconditional preset": ["model.num_classes=0"],
    }),
    # loss, learning rates and G depth, on top of the spectral-norm D the first sweep chose
    "dcgan-loss": ("dcgan-quick", {
        "preset (non-saturating)": [],
        "hinge": ["model.loss=hinge"],
        "hinge, TTUR (G 1e-4, D 4e-4)": ["model.loss=hinge", "train.lr=1e-4",
                                         "model.d_lr_scale=4"],
        "non-saturating, G +1 conv/level": ["model.g_extra_convs=1"],
    }),
    # the fitted (ex-post mixture) prior, and the sharper decoders a lower KL weight allows
    "vae-prior": ("vae-quick", {
        "fitted prior": ["model.prior=fitted"],
        "fitted prior, beta 0.5": ["model.prior=fitted", "model.beta=0.5"],
        "fitted prior, beta 0.25": ["model.prior=fitted", "model.beta=0.25"],
        "fitted prior, beta 0.1": ["model.prior=fitted", "model.beta=0.1"],
    }),
}
METRICS = ("fid", "precision", "recall", "coverage", "modes_missing")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="dcgan-discriminator")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cpu-minutes", type=float, default=None,
                        help="train each variant for this much CPU time on one thread instead")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    budget = ["--epochs", str(args.epochs)]
    if args.cpu_minutes:
        torch.set_num_threads(1)
        budget = ["--epochs", "100000", "--set", f"train.max_minutes={args.cpu_minutes}",
                  "--set", "train.clock=cpu", "--set", "train.num_threads=1"]
    preset, variants = SWEEPS[args.sweep]
    results = {}
    for i, (name, overrides) in enumerate(variants.items()):
        run = args.out / f"v{i}"
        if not (run / "summary.json").is_file():
            sets = [x for o in overrides for x in ("--set", o)]
            cli(["train", "--config", preset, *budget, "--out", str(run), "--no-progress",
                 *sets])
        model, _ = load_model(run)
        n = args.num_samples
        labels = torch.arange(n) % model.num_classes if model.num_classes else None
        r = evaluate(generate(model, n, labels=labels, seed=0), labels=labels,
                     use_memorisation=False)
        results[name] = {"overrides": overrides, **{k: r[k] for k in METRICS}}
        print(name, results[name], flush=True)
    budget = (f"{args.cpu_minutes:g} CPU-minutes on one thread" if args.cpu_minutes
              else f"{args.epochs} epochs")
    lines = [f"`{' '.join(['python', *sys.argv])}`: preset `{preset}`, {budget} per variant, "
             f"N = {args.num_samples}, seed 0.", "",
             "| variant | FID | precision | recall | coverage | missing |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['fid']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['coverage']:.3f} | {r['modes_missing']} |" for name, r in results.items()]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"sweep_{args.sweep}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results / f"sweep_{args.sweep}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    conditional = {k: v for k, v in results.items() if "unconditional" not in k}
    best = min(conditional, key=lambda k: conditional[k]["fid"])
    print("BEST", " ".join(conditional[best]["overrides"]))


if __name__ == "__main__":
    main()
