"""bf16 training against fp32 at equal steps (issue 19): each family's quick preset trained for
the same number of steps with the same seed, once per precision, then scored alike.

    python benchmarks/bf16_training.py --out docs/results/bf16_training   (~25 min on 2 cores)

A family's fp32 and bf16 runs train side by side, one thread each (`train.num_threads=1`,
`train.clock=cpu`), so the machine's load hits both; the speedup is the whole training's
images per CPU-second (data, optimizer, checkpoints and, in the DCGAN preset, its compile
included), and each run's steady rate from its metrics.csv is given beside it. Both runs are
then sampled in fp32 with one seed (so only the training's precision differs) and scored by
`fashiongen eval` against the test split (N samples). The issue's target: FID within 5% of
fp32's. One seed per run: two fp32 runs with different seeds differ by a few percent too.

Writes OUT/bf16_training.json and OUT/README.md (the table); runs in --runs (kept: a family
whose two runs and scores exist is not re-run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

from fashiongen import precision

PRECISIONS = ("fp32", "bf16")
STEPS = {"ddpm": 1400, "dcgan": 1400, "vae": 1870}  # ~3, 3 and 4 epochs (the presets': 1, 3, 4)
FID_TOLERANCE = 0.05
FASHIONGEN = [sys.executable, "-m", "fashiongen"]


def train_both(family: str, steps: int, runs: Path, seed: int) -> None:
    """The family's fp32 and bf16 runs at once, each on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = []
    for p in PRECISIONS:
        run = runs / f"{family}-{p}"
        if (run / "summary.json").is_file():
            continue
        changes = [
            "train.epochs=1000", f"train.max_steps={steps}", f"train.precision={p}",
            "train.num_threads=1", "train.clock=cpu", "train.use_tensorboard=false",
        ]  # fmt: skip
        command = [*FASHIONGEN, "train", "--config", f"{family}-quick", "--seed", str(seed)]
        command += ["--out", str(run), *(a for c in changes for a in ("--set", c))]
        if run.is_dir():
            command.append("--resume")
        run.parent.mkdir(parents=True, exist_ok=True)
        log = open(runs / f"{family}-{p}.log", "w")  # noqa: SIM115 (the child keeps it open)
        processes.append(
            (run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        )
    for run, process in processes:
        if process.wait():
            sys.exit(f"error: training {run} failed (log: {run}.log)")


def steady_rate(run: Path) -> float:
    """Median images/s over the logged windows after the first quarter of the run."""
    with open(run / "metrics.csv") as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f) if r.get("images_per_s")]
    return statistics.median(rates[len(rates) // 4 :])


def score(run: Path, num_samples: int, seed: int) -> dict:
    out = run / f"eval_fp32_{num_samples}.json"
    if not out.is_file():
        subprocess.run(
            [*FASHIONGEN, "eval", str(run), "--num-samples", str(num_samples), "--seed",
             str(seed), "--precision", "fp32", "--json", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return json.loads(out.read_text())


def family_row(family: str, args: argparse.Namespace) -> dict:
    train_both(family, STEPS[family], args.runs, args.seed)
    row: dict = {"family": family, "preset": f"{family}-quick", "steps": STEPS[family]}
    for p in PRECISIONS:
        run = args.runs / f"{family}-{p}"
        summary = json.loads((run / "summary.json").read_text())
        scores = score(run, args.num_samples, args.seed)
        batch_size = tomllib.loads((run / "config.toml").read_text())["train"]["batch_size"]
        images = summary["steps"] * batch_size
        row[p] = {
            "chosen": summary["precision"]["choice"],
            "train_cpu_seconds": round(summary["train_seconds"], 1),
            "images_per_cpu_second": round(images / summary["train_seconds"], 1),
            "steady_images_per_s": round(steady_rate(run), 1),
            **{k: scores[k] for k in ("fid", "kid_mean", "precision", "recall", "coverage")},
        }
    fp32, bf16 = row["fp32"], row["bf16"]
    row["speedup"] = round(bf16["images_per_cpu_second"] / fp32["images_per_cpu_second"], 2)
    row["steady_speedup"] = round(bf16["steady_images_per_s"] / fp32["steady_images_per_s"], 2)
    row["fid_ratio"] = round(bf16["fid"] / fp32["fid"], 3)
    row["within_target"] = row["fid_ratio"] <= 1 + FID_TOLERANCE
    return row


def markdown(result: dict) -> str:
    lines = [
        "# bf16 training against fp32 at equal steps",
        "",
        f"Machine: {result['machine']}; CPU flags: "
        + precision.flag_names(result["cpu_flags"])
        + f"; torch {result['torch']}. Each family's quick preset for the same steps, seed "
        f"{result['seed']}, one thread per run, fp32 and bf16 side by side; sampled in fp32, "
        f"N = {result['num_samples']}, test split. Speedup: images per CPU-second of the whole "
        "run (steady: median logged images/s after the first quarter).",
        "",
        f"Command: `python benchmarks/bf16_training.py --out {result['out']}`",
        "",
        "| family | steps | fp32 img/CPU-s | bf16 img/CPU-s | speedup (steady) | fp32 FID | "
        "bf16 FID | bf16 / fp32 | recall fp32 / bf16 | within 5% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        f, b = r["fp32"], r["bf16"]
        lines.append(
            f"| {r['family']} | {r['steps']} | {f['images_per_cpu_second']:.0f} | "
            f"{b['images_per_cpu_second']:.0f} | {r['speedup']:.2f}x ({r['steady_speedup']:.2f}x) "
            f"| {f['fid']:.3f} | {b['fid']:.3f} | {r['fid_ratio']:.3f} | "
            f"{f['recall']:.3f} / {b['recall']:.3f} | {'yes' if r['within_target'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/bf16_training"))
    parser.add_argument("--runs", type=Path, default=Path("runs/bf16-training"))
    parser.add_argument("--families", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = {
        "machine": precision.cpu_model(),
        "cpu_flags": precision.cpu_flags(),
        "torch": torch.__version__,
        "seed": args.seed,
        "num_samples": args.num_samples,
        "out": str(args.out),
        "rows": [family_row(f, args) for f in args.families],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bf16_training.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "README.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
