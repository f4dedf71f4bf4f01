"""Quality per CPU-minute: every family and every peer trained for the same budget, one run.

    python benchmarks/quality_per_budget.py --out docs/results/quality_per_budget
    (make bench-quality; about 90 minutes on 2 cores)

Each job trains in its own process on ONE thread for a budget of that process's CPU time
(`train.clock = "cpu"`), so two jobs share the two cores and a busy machine slows the run
down without shrinking what a budget buys; torch.compile (on in the DCGAN presets) compiles
in-process, so its CPU time is spent from the budget too. The project's families run their
quick presets through `fashiongen.train` (as `fashiongen train --model all` does); the peers
(`benchmarks/peers/`) run their tutorial loops on the same in-memory data. Then each draws
N samples with one seed and `fashiongen.metrics.evaluate` scores them against the test set.

Writes `OUT/results/JOB.json`, `OUT/grids/JOB.png` (64 samples) and `OUT/README.md`, the
table. Jobs already done are kept, so an interrupted run resumes by running it again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from family_table import real_floor as score_real  # benchmarks/ is on sys.path

OURS = {
    "gan": "gan",
    "dcgan": "dcgan",
    "vae": "vae",
    "ddpm": "ddpm",
    "hybrid": "hybrid",
    "ddpm-long": "ddpm",
    "dcgan-uncond": "dcgan",
    "ddpm-fp32": "ddpm",
}
# what a job changes in its family's quick preset
JOB_OVERRIDES = {
    "ddpm-long": ["train.ema_decay=0.999"],  # a longer run affords a slower EMA
    "dcgan-uncond": ["model.num_classes=0"],  # the quick preset is conditional
    # the DDPM job pinned to fp32: beside `ddpm` (precision=auto) on a machine with bf16
    # units, what they buy at equal CPU time (issue 19); not in the default order
    "ddpm-fp32": ["train.precision=fp32"],
}
PEER_JOBS = {
    "mlp-gan": "mlp-gan",
    "tf-dcgan": "tf-dcgan",
    "keras-vae": "keras-vae",
    "diffusers-ddpm": "diffusers-ddpm",
    "diffusers-ddpm-long": "diffusers-ddpm",
}
LONG_JOBS = ("ddpm-long", "diffusers-ddpm-long")  # the diffusion budget
JOB_ORDER = [
    "ddpm-long",
    "diffusers-ddpm-long",
    "diffusers-ddpm",
    "ddpm",
    "hybrid",
    "dcgan",
    "dcgan-uncond",
    "tf-dcgan",
    "gan",
    "mlp-gan",
    "vae",
    "keras-vae",
]
EXTRA_JOBS = ["ddpm-fp32"]  # run only when asked for (--jobs)
METRICS = (
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "density",
    "coverage",
    "class_entropy",
    "modes_missing",
    "conditional_accuracy",
    "per_class_recall",
    "per_class_coverage",
    "intra_class_spread",
)


def train_ours(job: str, minutes: float, runs: Path, seed: int) -> tuple:
    from fashiongen.checkpoint import load_model
    from fashiongen.evaluation import describe_sampling
    from fashiongen.training import train
    from fashiongen.training.budget import family_configs

    family = OURS[job]
    run = runs / job
    overrides = [
        ("train.clock", "cpu"),
        ("train.num_threads", 1),
        ("train.use_tensorboard", False),
        ("out_dir", str(run)),
        *JOB_OVERRIDES.get(job, []),
    ]
    cfg = family_configs(minutes, runs, families=[family], seed=seed, overrides=overrides)[family]
    if not (run / "summary.json").is_file():
        train(cfg, resume=(run / "final").is_dir() or any(run.glob("step_*")), progress=False)
    summary = json.loads((run / "summary.json").read_text())
    model, checkpoint = load_model(run)
    parameters = sum(p.numel() for p in model.parameters())

    def draw(num_samples: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        from fashiongen.evaluation import draw_balanced

        drawn = draw_balanced(model, num_samples, sampling=checkpoint.config.sample, seed=seed)
        return drawn.images, drawn.labels

    how = describe_sampling(model, checkpoint.config.sample)
    info = {
        "family": family,
        "preset": f"{family}-quick",
        "parameters": parameters,
        "conditional": bool(model.num_classes),
        "sampling": how,
        "train_cpu_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "images_trained": summary["steps"] * cfg.train.batch_size,
        "train_precision": summary["precision"],
    }
    return draw, info


def train_peer(job: str, minutes: float, seed: int) -> tuple:
    from peers import PEERS

    from fashiongen.data import load_dataset
    from fashiongen.images import to_model_range, to_uint8

    peer = PEERS[PEER_JOBS[job]](seed=seed)
    images = load_dataset("fashion-mnist", "train").images
    order = torch.Generator().manual_seed(seed)
    spent, steps, budget = 0.0, 0, 60 * minutes
    while spent < budget:
        perm = torch.randperm(len(images), generator=order)
        for start in range(0, len(images) - peer.batch_size + 1, peer.batch_size):
            x0 = to_model_range(images[perm[start : start + peer.batch_size]])
            started = time.process_time()
            peer.train_step(x0)
            spent += time.process_time() - started
            steps += 1
            if spent >= budget:
                break

    def draw(num_samples: int) -> tuple[torch.Tensor, None]:
        return to_uint8(peer.sample(num_samples, torch.Generator().manual_seed(seed))), None

    parameters = sum(p.numel() for net in peer.networks.values() for p in net.parameters())
    info = {
        "family": PEER_JOBS[job],
        "preset": "peer",
        "parameters": parameters,
        "conditional": False,
        "sampling": "DDIM 50 steps" if "diffusers" in job else "one pass",
        "train_cpu_seconds": spent,
        "steps": steps,
        "images_trained": steps * peer.batch_size,
    }
    return draw, info


def run_job(job: str, args: argparse.Namespace) -> None:
    from fashiongen.images import save_grid
    from fashiongen.metrics import evaluate

    torch.set_num_threads(1)
    minutes = args.diffusion_minutes if job in LONG_JOBS else args.minutes
    if job in OURS:
        draw, info = train_ours(job, minutes, args.runs, args.seed)
    else:
        draw, info = train_peer(job, minutes, args.seed)
    started = time.perf_counter()
    images, labels = draw(args.num_samples)
    sample_seconds = time.perf_counter() - started
    scores = evaluate(images, labels=labels, seed=args.seed)
    result = {
        "job": job,
        "kind": "ours" if job in OURS else "peer",
        "budget_minutes": minutes,
        **info,
        "epochs": round(info["images_trained"] / 60_000, 2),
        "images_per_cpu_second": round(info["images_trained"] / info["train_cpu_seconds"], 1),
        "num_samples": args.num_samples,
        "seed": args.seed,
        "sample_seconds_per_1000": round(1000 * sample_seconds / args.num_samples, 2),
        **{k: scores[k] for k in METRICS},
        "class_histogram": scores["class_histogram"],
        "machine": _machine(),
    }
    save_grid(args.out / "grids" / f"{job}.png", images[:64], num_rows=8)
    path = args.out / "results" / f"{job}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: result[k] for k in ("job", "steps", "epochs", "fid", "recall")}), flush=True
    )


def run_all(args: argparse.Namespace) -> None:
    """Every job not done yet, `--lanes` at a time, one thread each; then the table."""
    pending = [j for j in args.jobs if not (args.out / "results" / f"{j}.json").is_file()]
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    # torch.compile (the DCGAN presets) compiles in this process, so the budget counts it
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
    }
    running: dict[str, subprocess.Popen] = {}
    failed = []
    while pending or running:
        while pending and len(running) < args.lanes:
            job = pending.pop(0)
            command = [sys.executable, __file__, "--job", job, *forwarded(args)]
            with open(args.out / "logs" / f"{job}.log", "w") as log:  # the child keeps it open
                running[job] = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            print(f"started {job}", flush=True)
        time.sleep(2)
        for job, process in list(running.items()):
            if process.poll() is not None:
                del running[job]
                print(f"{job}: {'done' if process.returncode == 0 else 'FAILED'}", flush=True)
                if process.returncode:
                    failed.append(job)
    write_table(args)
    if failed:
        sys.exit(f"error: jobs failed: {', '.join(failed)} (logs in {args.out / 'logs'})")


def forwarded(args: argparse.Namespace) -> list[str]:
    return [
        "--out",
        str(args.out),
        "--runs",
        str(args.runs),
        "--minutes",
        str(args.minutes),
        "--diffusion-minutes",
        str(args.diffusion_minutes),
        "--seed",
        str(args.seed),
        "--num-samples",
        str(args.num_samples),
    ]


def real_floor(args: argparse.Namespace) -> dict:
    path = args.out / "results" / "real.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(score_real(args.num_samples, args.seed), indent=2) + "\n")
    return json.loads(path.read_text())


def write_table(args: argparse.Namespace) -> None:
    results = {
        p.stem: json.loads(p.read_text())
        for p in (args.out / "results").glob("*.json")
        if p.stem != "real"
    }
    real = real_floor(args)
    peers = [r for r in results.values() if r["kind"] == "peer"]
    best_peer = min(peers, key=lambda r: r["fid"]) if peers else None
    head = [
        "job",
        "kind",
        "CPU-min",
        "params",
        "img/CPU-s",
        "precision",
        "epochs",
        "sampling",
        "FID",
        "x best peer",
        "KID",
        "prec.",
        "recall",
        "cover.",
        "missing",
        "s/1000 img",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append(
        f"| real train images | floor | | | | | | | {real['fid']:.3f} | | "
        f"{real['kid_mean']:.4f} | {real['precision']:.3f} | {real['recall']:.3f} | "
        f"{real['coverage']:.3f} | {real['modes_missing']} | |"
    )
    for job in [j for j in JOB_ORDER + EXTRA_JOBS if j in results]:
        r = results[job]
        ratio = f"{r['fid'] / best_peer['fid']:.2f}" if best_peer else ""
        lines.append(
            f"| {job} | {r['kind']} | {r['budget_minutes']:g} | {r['parameters'] / 1e6:.2f}M | "
            f"{r['images_per_cpu_second']:.0f} | {_precision_cell(r)} | {r['epochs']:.1f} | "
            f"{r['sampling']} | "
            f"{r['fid']:.2f} | {ratio} | {r['kid_mean']:.4f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['coverage']:.3f} | {r['modes_missing']} | "
            f"{r['sample_seconds_per_1000']:.1f} |"
        )
    text = [
        "# Quality per CPU-minute: the project's families beside the peers",
        "",
        f"Every job trained on one thread for its budget of CPU time ({args.minutes:g} "
        f"CPU-minutes; {args.diffusion_minutes:g} for the `-long` diffusion jobs), then drew "
        f"N = {args.num_samples} samples with seed {args.seed}, scored against the Fashion-MNIST "
        "test set in the shipped feature network's space. `x best peer` = FID / the best peer's "
        "FID in this run. The first row scores real training images the same way: the floor.",
        "",
        "Machines (CPU flags): "
        + ("; ".join(sorted({r["machine"] for r in results.values() if "machine" in r})) or "-")
        + ".",
        "",
        f"Command: `make bench-quality` (= `python benchmarks/quality_per_budget.py "
        f"--out {args.out}`); samples of each job in `grids/`.",
        "",
        *lines,
        "",
    ]
    notes = args.out / "notes.md"  # hand-written: which rows were re-run when, and why
    if notes.is_file():
        text += [notes.read_text().strip(), ""]
    (args.out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


def _machine() -> str:
    from fashiongen import precision

    return f"{precision.cpu_model()} ({precision.flag_names(precision.cpu_flags())})"


def _precision_cell(result: dict) -> str:
    """The training precision a job ran in (peers, and results from before it was recorded,
    ran in fp32 or are unknown: blank)."""
    chosen = result.get("train_precision")
    if not chosen:
        return ""
    return chosen["choice"] + (" (auto)" if chosen["requested"] == "auto" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/quality_per_budget_v2"))
    parser.add_argument("--runs", type=Path, default=Path("runs/qpb-v2-runs"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--diffusion-minutes", type=float, default=30.0)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lanes", type=int, default=2, help="jobs at once (one thread each)")
    parser.add_argument("--jobs", nargs="+", default=JOB_ORDER, choices=JOB_ORDER + EXTRA_JOBS)
    parser.add_argument("--job", choices=JOB_ORDER + EXTRA_JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if args.job:
        run_job(args.job, args)
    elif args.table_only:
        write_table(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
