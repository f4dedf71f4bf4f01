"""Preset sweeps: which settings a preset should take, each variant trained the same way.

    python benchmarks/preset_sweep.py --sweep dcgan-discriminator --epochs 4 --out runs/sweep
    python benchmarks/preset_sweep.py --sweep dcgan-loss --cpu-minutes 5 --out runs/sweep-loss
    python benchmarks/preset_sweep.py --sweep vae-prior --cpu-minutes 5 --out runs/sweep-vae
    python benchmarks/preset_sweep.py --sweep dcgan-objective --cpu-minutes 5 --out runs/sw-dcgan
    python benchmarks/preset_sweep.py --sweep gan-objective --cpu-minutes 5 --out runs/sw-gan

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

CLASSIC = ["model.loss=non_saturating", "model.r1_gamma=0", "model.r2_gamma=0",
           "model.use_spectral_norm=true", "model.use_minibatch_std=true",
           "train.betas=[0.5, 0.999]"]
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
    # R3GAN's objective (the dcgan preset) against the classic losses, one ingredient
    # removed per row; the classic rows are the previous preset (spectral-norm D with
    # minibatch-std, Adam betas (0.5, 0.999))
    "dcgan-objective": ("dcgan", {
        "preset: relativistic + R1 + R2 (lazy, every 4th D step), Adam (0, 0.99)": [],
        "classic: non-saturating, SN D, mbstd, Adam (0.5, 0.999)": CLASSIC,
        "classic hinge, SN D, mbstd, Adam (0.5, 0.999)": [*CLASSIC, "model.loss=hinge"],
        "no R2 (R1 only)": ["model.r2_gamma=0"],
        "no penalties": ["model.r1_gamma=0", "model.r2_gamma=0"],
        "non-saturating loss + R1 + R2": ["model.loss=non_saturating"],
        "Adam (0.5, 0.999)": ["train.betas=[0.5, 0.999]"],
        "D weight reversion on": ["model.d_reversion=true"],
    }),
    "gan-objective": ("gan", {
        "preset": [],
        "classic: non-saturating, dropout 0.3 in D, Adam (0.5, 0.999)": [
            "model.loss=non_saturating", "model.r1_gamma=0", "model.r2_gamma=0",
            "model.dropout=0.3", "train.betas=[0.5, 0.999]"],
    }),
}
METRICS = ("fid", "precision", "recall", "coverage", "modes_missing", "conditional_accuracy")


def score(run: Path, num_samples: int, *, use_ema: bool = True) -> dict:
    """The sweep's metrics of `num_samples` class-balanced samples from a trained run."""
    model, _ = load_model(run, use_ema=use_ema)
    labels = torch.arange(num_samples) % model.num_classes if model.num_classes else None
    r = evaluate(generate(model, num_samples, labels=labels, seed=0), labels=labels,
                 use_memorisation=False)
    return {k: r.get(k) for k in METRICS}


def table_row(name: str, r: dict) -> str:
    accuracy = r["conditional_accuracy"]
    row = (f"| {name} | {r['fid']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
           f"{r['coverage']:.3f} | {'-' if accuracy is None else f'{accuracy:.3f}'} | "
           f"{r['modes_missing']} |")
    if "raw" in r:
        row += f" {r['raw']['fid']:.3f} | {r['raw']['recall']:.3f} |"
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="dcgan-discriminator")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cpu-minutes", type=float, default=None,
                        help="train each variant for this much CPU time on one thread instead")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--variants", default=None,
                        help="comma-separated variant numbers to train and score (default all; "
                             "the table is written only for all)")
    parser.add_argument("--score-raw", action="store_true",
                        help="also score the raw (non-EMA) generator of each variant")
    args = parser.parse_args()
    budget = ["--epochs", str(args.epochs)]
    if args.cpu_minutes:
        torch.set_num_threads(1)
        budget = ["--epochs", "100000", "--set", f"train.max_minutes={args.cpu_minutes}",
                  "--set", "train.clock=cpu", "--set", "train.num_threads=1"]
    preset, variants = SWEEPS[args.sweep]
    results = {}
    chosen = (set(range(len(variants))) if args.variants is None
              else {int(i) for i in args.variants.split(",")})
    for i, (name, overrides) in enumerate(variants.items()):
        if i not in chosen:
            continue
        run = args.out / f"v{i}"
        if not (run / "summary.json").is_file():
            sets = [x for o in overrides for x in ("--set", o)]
            cli(["train", "--config", preset, *budget, "--out", str(run), "--no-progress",
                 *sets])
        results[name] = {"overrides": overrides, **score(run, args.num_samples)}
        if args.score_raw:
            results[name]["raw"] = score(run, args.num_samples, use_ema=False)
        print(name, results[name], flush=True)
    if args.variants is not None:
        return
    budget = (f"{args.cpu_minutes:g} CPU-minutes on one thread" if args.cpu_minutes
              else f"{args.epochs} epochs")
    lines = [f"`{' '.join(['python', *sys.argv])}`: preset `{preset}`, {budget} per variant, "
             f"N = {args.num_samples}, seed 0.", "",
             "| variant | FID | precision | recall | coverage | class acc. | missing |"
             + (" raw G: FID | raw G: recall |" if args.score_raw else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if args.score_raw else "")]
    lines += [table_row(name, r) for name, r in results.items()]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"sweep_{args.sweep}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results / f"sweep_{args.sweep}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    conditional = {k: v for k, v in results.items() if "unconditional" not in k}
    best = min(conditional, key=lambda k: conditional[k]["fid"])
    print("BEST", " ".join(conditional[best]["overrides"]))


if __name__ == "__main__":
    main()
