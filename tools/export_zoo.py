"""Copy trained runs into the package's model zoo (float16 sampling weights + manifest).

    python tools/export_zoo.py --runs runs/gpu --results docs/results/family_table.json
    python tools/export_zoo.py --combined-hybrid runs/zoo-hybrid
    python tools/export_zoo.py --combined-hybrid runs/zoo-hybrid-uncond \
        --name hybrid-uncond --parts gan-uncond ddpm-uncond
    python tools/export_zoo.py --budget-runs runs/quality_per_budget
    python tools/export_zoo.py --distilled runs/distill-ddpm --name ddpm-fast --teacher ddpm \
        --command "fashiongen distill ddpm --steps 4 --out runs/distill-ddpm"
    python tools/export_zoo.py --runs runs/cpu-zoo --families gan dcgan vae ddpm \
        --device "this machine: 2-core AMD EPYC CPU, fp32" --score

Each run folder named after a family becomes the zoo model of that name. The manifest
records the preset, the exact command, the commit, the device and training time (from the
run's summary.json) and the metrics measured by benchmarks/family_table.py (or, with
`--score`, measured here at the same N and seed by `fashiongen.evaluation.draw_and_score`,
as the family table does). A run folder may hold `command.txt`, the
exact command that trained it, when that was more than `fashiongen train --config FAMILY`.

`--combined-hybrid CHECKPOINT` replaces only the zoo's hybrid with a checkpoint made by
`fashiongen combine` from the zoo's own GAN and DDPM (no training of its own), scored here
at the family table's N and seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fashiongen.checkpoint import load_model
from fashiongen.evaluation import draw_and_score
from fashiongen.metrics import METRIC_NAME, METRIC_VERSION
from fashiongen.zoo import manifest, total_bytes, zoo_path
from fashiongen.zoo.release import (
    CHECK_NUM_SAMPLES,
    check_fid,
    export,
    manifest_scores,
    write_manifest,
    zoo_sampling,
)

SCORED_NOW = {"name": METRIC_NAME, "version": METRIC_VERSION}  # the metric of a score made here
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FAMILIES = ("gan", "dcgan", "vae", "ddpm", "hybrid")
DESCRIPTIONS = {
    "gan": "MLP GAN, class-conditional (R3GAN objective)",
    "dcgan": "DCGAN, class-conditional (R3GAN objective)",
    "vae": "convolutional VAE, class-conditional",
    "ddpm": "DDPM U-Net, class-conditional with guidance",
    "hybrid": "DCGAN draft + truncated diffusion refiner",
}


COMBINE_COMMAND = (
    "fashiongen combine src/fashiongen/zoo/{gan}.safetensors "
    "src/fashiongen/zoo/{ddpm}.safetensors --max-strength {max_strength} "
    "--strength {strength} --steps {steps} --guidance-scale {guidance_scale} "
    "--guide-scale {guide_scale} --out runs/zoo-{name}"
)


def score_zoo_model(name: str) -> dict:
    """The manifest's metrics of zoo model `name` as it ships (N = 2000, seed 0)."""
    model, loaded = load_model(zoo_path(name))
    metrics, _ = draw_and_score(model, 2000, sampling=zoo_sampling(loaded.config), seed=0)
    return manifest_scores(metrics, num_samples=2000, seed=0)


def record_fid_check(name: str) -> dict:
    """Score zoo model `name` as its install check will and record it: its manifest entry."""
    entries = manifest()
    entries[name]["fid_check"] = {
        "num_samples": CHECK_NUM_SAMPLES,
        "seed": 0,
        "fid": check_fid(name),
    }
    write_manifest(entries)
    return entries[name]


def export_combined_hybrid(
    checkpoint: Path,
    commit: str,
    name: str = "hybrid",
    gan: str = "gan",
    ddpm: str = "ddpm",
    num_samples: int = 2000,
    seed: int = 0,
) -> None:
    model, loaded = load_model(checkpoint)
    metrics, _ = draw_and_score(model, num_samples, sampling=zoo_sampling(loaded.config), seed=seed)
    entries = manifest()
    parts = [entries[gan], entries[ddpm]]
    sampling = loaded.config.sample
    guided = f", guidance {sampling.guidance_scale:g}" if sampling.guidance_scale != 1 else ""
    guided += f", autoguidance {sampling.guide_scale:g}" if sampling.guide_scale != 1 else ""
    info = {
        "summary": f"zoo {gan} draft + zoo {ddpm} refiner (strength {sampling.strength:g}, "
        f"{sampling.num_steps} {sampling.sampler} steps{guided}: "
        f"{model.num_network_evaluations(sampling)} network evaluations)",
        "preset": f"the zoo's {gan} + {ddpm}, joined by `fashiongen combine`",
        "command": COMBINE_COMMAND.format(
            gan=gan,
            ddpm=ddpm,
            name=name,
            max_strength=loaded.config.model.max_strength,
            strength=f"{sampling.strength:g}",
            steps=sampling.num_steps,
            guidance_scale=f"{sampling.guidance_scale:g}",
            guide_scale=f"{sampling.guide_scale:g}",
        ),
        "commit": commit,
        "device": "this machine's CPU (combining trains nothing); the parts: " + parts[0]["device"],
        "train_seconds": round(sum(p["train_seconds"] for p in parts), 1),
        "epochs": None,
        "metrics": manifest_scores(metrics, num_samples=num_samples, seed=seed),
        "metric": SCORED_NOW,
    }
    print(export(checkpoint, name, info))
    print(record_fid_check(name))


def export_distilled(
    run: Path,
    name: str,
    teacher: str,
    commit: str,
    command: str,
    *,
    fast_version: bool = True,
    device: str = "this machine: 2-core AMD EPYC CPU, one thread, fp32",
) -> None:
    """A `fashiongen distill` run of zoo model `teacher` as zoo model `name`, scored here at
    N = 2000, seed 0, and (`fast_version`) marked as `teacher`'s fast version (the web page's
    default model, `synth`'s default sampler for `teacher`). Its training seconds are those of
    its chain of runs: a fine-tune (`model.start_from` a zoo model) adds its start's."""
    model, loaded = load_model(run)
    num_samples, seed = 2000, 0
    metrics, _ = draw_and_score(model, num_samples, sampling=zoo_sampling(loaded.config), seed=seed)
    summary = json.loads((run / "summary.json").read_text())
    steps = loaded.config.model.steps
    # a fine-tune's cost is its start's too (a zoo model's, from the manifest; the teacher's
    # own training is not counted)
    start = manifest().get(loaded.config.model.start_from, {})
    train_seconds = summary["train_seconds"] + start.get("train_seconds", 0.0)
    info = {
        "summary": f"the zoo {teacher} distilled to {steps} network calls, guidance folded in",
        "preset": "configs/distill.toml",
        "command": command,
        "commit": commit,
        "device": device,
        "train_seconds": round(train_seconds, 1),
        "last_run_train_seconds": round(summary["train_seconds"], 1),
        "epochs": summary["epochs"],
        **({"fast_version_of": teacher} if fast_version else {}),
        "metrics": manifest_scores(metrics, num_samples=num_samples, seed=seed),
        "metric": SCORED_NOW,
    }
    print(export(run, name, info))
    print(record_fid_check(name))


# Unconditional models trained on this machine's CPU by `make bench-quality`: zoo name, job.
BUDGET_RUNS = {
    "ddpm-uncond": "ddpm-long",
    "gan-uncond": "gan",
    "vae-uncond": "vae",
    "dcgan-uncond": "dcgan-uncond",
}


def export_budget_runs(
    runs: Path, results: Path, commit: str, names: list[str] | None = None
) -> None:
    """The unconditional quick-preset runs of the quality-per-budget benchmark, as zoo models;
    their metrics are that benchmark's (same N and seed as the rest of the zoo)."""
    sys.path.insert(0, str(BENCHMARKS))  # the benchmark's own table of what each job changes
    from quality_per_budget import JOB_OVERRIDES

    for name, job in BUDGET_RUNS.items():
        if names and name not in names:
            continue
        result = json.loads((results / f"{job}.json").read_text())
        family, minutes = result["family"], result["budget_minutes"]
        info = {
            "summary": f"{DESCRIPTIONS[family].split(',')[0]}, unconditional, {minutes:g} "
            "CPU-minutes on this machine",
            "preset": f"configs/{family}-quick.toml",
            "command": (
                f"fashiongen train --config {family}-quick --out runs/{name} --set "
                f"train.epochs=100000 --set train.max_minutes={minutes:g} --set "
                "train.clock=cpu --set train.num_threads=1"
                + "".join(f" --set {o}" for o in JOB_OVERRIDES.get(job, []))
                + "  (= make bench-quality's job "
                + job
                + ")"
            ),
            "commit": commit,
            "device": "this machine: 2-core AMD EPYC CPU, one thread, fp32",
            "train_seconds": round(result["train_cpu_seconds"], 1),
            "epochs": result["epochs"],
            "metrics": manifest_scores(
                result, num_samples=result["num_samples"], seed=result["seed"]
            ),
        }
        print(export(runs / job, name, info))
        print(record_fid_check(name))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--results", type=Path, default=Path("docs/results/family_table.json"))
    parser.add_argument(
        "--device",
        help="where the runs trained (default: the lent GPU for --runs, this CPU on one "
        "thread for --distilled)",
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument(
        "--score",
        action="store_true",
        help="score each run here (N = 2000, seed 0) instead of --results",
    )
    parser.add_argument("--combined-hybrid", type=Path, metavar="CHECKPOINT")
    parser.add_argument("--name", default="hybrid", help="zoo name of the combined hybrid")
    parser.add_argument(
        "--parts",
        nargs=2,
        default=["gan", "ddpm"],
        metavar=("GAN", "DDPM"),
        help="the zoo models it was combined from",
    )
    parser.add_argument("--distilled", type=Path, metavar="RUN", help="a distill run, as --name")
    parser.add_argument("--teacher", default="ddpm", help="the zoo model --distilled was taught by")
    parser.add_argument("--command", help="the exact command that made --distilled")
    parser.add_argument(
        "--not-fast-version",
        action="store_true",
        help="do not mark --distilled as --teacher's fast version (a second student)",
    )
    parser.add_argument(
        "--budget-runs",
        type=Path,
        metavar="DIR",
        help="runs/quality_per_budget: add its unconditional models",
    )
    parser.add_argument(
        "--budget-names",
        nargs="+",
        choices=sorted(BUDGET_RUNS),
        help="only these zoo models of --budget-runs",
    )
    parser.add_argument(
        "--budget-results", type=Path, default=Path("docs/results/quality_per_budget/results")
    )
    parser.add_argument(
        "--guide",
        type=Path,
        metavar="CHECKPOINT",
        help="with --runs: an earlier checkpoint of the run, its sampling weights the model's "
        "own autoguidance guide (what train.keep_guide_at keeps)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --runs: config the zoo model ships with (sample.guide_scale=2 ...)",
    )
    return parser.parse_args()


def export_runs(args: argparse.Namespace, commit: str) -> None:
    """The zoo models of --families from the trained run folders under --runs."""
    results = None if args.score else json.loads(args.results.read_text())
    for family in args.families:
        run = args.runs / family
        summary = json.loads((run / "summary.json").read_text())
        ships_changed = args.guide is not None or bool(args.set)
        if results is None and ships_changed:  # scored below, as the zoo file samples
            metrics, num_samples, seed = {}, 2000, 0
        elif results is None:
            model, loaded = load_model(run)
            num_samples, seed = 2000, 0
            metrics, _ = draw_and_score(
                model, num_samples, sampling=zoo_sampling(loaded.config), seed=seed
            )
        else:
            metrics = results["families"][family]
            num_samples, seed = results["num_samples"], results["seed"]
        command_file = run / "command.txt"
        command = (
            command_file.read_text().strip()
            if command_file.is_file()
            else f"fashiongen train --config {family} --out runs/{family}"
        )
        info = {
            "summary": DESCRIPTIONS[family],
            "preset": f"configs/{family}.toml",
            "command": command,
            "commit": commit,
            "device": args.device or "NVIDIA H100 (lent GPU machine), fp32",
            "train_seconds": round(summary["train_seconds"], 1),
            "epochs": summary["epochs"],
            "metrics": manifest_scores(metrics, num_samples=num_samples, seed=seed),
            "metric": SCORED_NOW,
        }
        path = export(run, family, info, guide_from=args.guide, overrides=args.set)
        if args.score and ships_changed:
            info["metrics"].update(score_zoo_model(family))
            path = export(run, family, info, guide_from=args.guide, overrides=args.set)
        print(path, record_fid_check(family)["fid_check"])


def main() -> None:
    args = parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if args.budget_runs:
        export_budget_runs(args.budget_runs, args.budget_results, commit, args.budget_names)
    elif args.distilled:
        export_distilled(
            args.distilled,
            args.name,
            args.teacher,
            commit,
            args.command,
            fast_version=not args.not_fast_version,
            **({"device": args.device} if args.device else {}),
        )
    elif args.combined_hybrid:
        export_combined_hybrid(args.combined_hybrid, commit, args.name, *args.parts)
    else:
        export_runs(args, commit)
    print(f"zoo size: {total_bytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
