"""Few-step sampling: FID against network evaluations and seconds, zoo DDPM, its distilled
students and the zoo hybrid.

    python benchmarks/step_sweep.py --out docs/results/step_sweep          # the FIDs (long)
    python benchmarks/step_sweep.py --out docs/results/step_sweep --time   # quiet machine
    python benchmarks/step_sweep.py --backend torch --no-ancestral --out docs/results/step_sweep
    python benchmarks/step_sweep.py --grid few --hybrid runs/zoo-hybrid --num-samples 2000 \
        --out docs/results/hybrid_sweep      # a hybrid against the DDPM at 1-21 evaluations

The zoo DDPM with DDIM and DPM-Solver++ 2M at 5, 10, 20 and 50 steps against 1000-step
ancestral sampling, and the zoo hybrid (the zoo GAN's draft noised to strength s, then a few
DPM-Solver++ steps of the zoo DDPM) on the same axes.
Every row draws N samples with the same seed and balanced class labels, each model's own
guidance; the networks run in onnxruntime (the `onnx` backend: within one grey level of
torch, and faster). One network evaluation = one batched call of the denoiser (or of G),
classifier-free guidance's two halves included. Seconds per 1000 images are timed apart
(`--time`, 128 images a row, 2 threads) so a busy machine during the long FID run cannot
skew them. Writes OUT/step_sweep.json, OUT/README.md and OUT/step_sweep.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DDPM_ROWS = [(s, n) for s in ("ddim", "dpmpp_2m") for n in (2, 3, 5, 10, 20, 50)] + [
    ("ancestral", 1000)
]
# strength, DPM-Solver++ steps from there (the zoo hybrid's default: 0.4, 3)
HYBRID_ROWS = [
    (0.0, 1),
    (0.25, 1),
    (0.25, 2),
    (0.4, 1),
    (0.4, 2),
    (0.4, 3),
    (0.4, 5),
    (0.4, 10),
    (0.6, 3),
    (0.6, 5),
    (0.6, 10),
]
METRICS = ("fid", "kid_mean", "precision", "recall", "coverage", "conditional_accuracy")
# `--grid few`: both at 1-21 network evaluations (a hybrid's draft is one of them; a
# refining step, like a DDPM step, is two with the DDPM's autoguidance)
FEW_DDPM_ROWS = [("dpmpp_2m", n) for n in (1, 2, 3, 4, 5, 6, 8, 10)]
FEW_HYBRID_ROWS = [(0.0, 1)] + [
    (s, n) for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6) for n in (1, 2, 3, 5, 8, 10)
]
GRIDS = {"default": (DDPM_ROWS, HYBRID_ROWS), "few": (FEW_DDPM_ROWS, FEW_HYBRID_ROWS)}
# the zoo's distilled students of the zoo DDPM (fashiongen distill), rows on every grid
DISTILLED_ROWS = {"ddpm-fast2": 2, "ddpm-fast": 4}
TIME_BATCH = 128


def settings(grid: str = "default", *, with_ancestral: bool = True):
    """(row name, zoo model, SampleConfig changes) for every row, fastest first."""
    ddpm_rows, hybrid_rows = GRIDS[grid]
    for sampler, steps in ddpm_rows:
        if sampler == "ancestral" and not with_ancestral:
            continue
        yield f"ddpm {sampler} {steps}", "ddpm", {"sampler": sampler, "num_steps": steps}
    for strength, steps in hybrid_rows:
        name = "hybrid draft alone" if strength == 0 else f"hybrid {strength} dpmpp_2m {steps}"
        yield name, "hybrid", {"sampler": "dpmpp_2m", "num_steps": steps, "strength": strength}
    from fashiongen.zoo import available

    for zoo_name, calls in DISTILLED_ROWS.items():
        if zoo_name in available():
            yield f"distilled {calls} ({zoo_name})", zoo_name, {}


def load(name: str, backend: str, path: Path | None = None):
    """A zoo model by name, or the checkpoint at `path`."""
    from fashiongen.checkpoint import load_model
    from fashiongen.export import use_onnx
    from fashiongen.zoo import zoo_path

    model, checkpoint = load_model(path or zoo_path(name))
    if backend == "onnx":
        use_onnx(model)
    return model, checkpoint.config.sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/step_sweep"))
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["torch", "onnx"], default="onnx")
    parser.add_argument("--time", action="store_true", help="time every row (quiet machine)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument(
        "--no-ancestral",
        action="store_true",
        help="leave out the 1000-step ancestral row (the longest by far); the table's "
        "reference is then DPM-Solver++ at 50 steps",
    )
    parser.add_argument(
        "--hybrid",
        type=Path,
        default=None,
        help="a hybrid checkpoint (fashiongen combine) instead of the zoo's",
    )
    args = parser.parse_args()
    from fashiongen.evaluation import draw_and_score
    from fashiongen.generate import generate

    path = args.out / "step_sweep.json"
    result = (
        json.loads(path.read_text())
        if path.is_file()
        else {
            "num_samples": args.num_samples,
            "seed": args.seed,
            "backend": args.backend,
            "rows": {},
        }
    )
    models = {}
    for row, zoo_name, changes in settings(args.grid, with_ancestral=not args.no_ancestral):
        if zoo_name not in models:
            models[zoo_name] = load(
                zoo_name, args.backend, args.hybrid if zoo_name == "hybrid" else None
            )
        model, base = models[zoo_name]
        sampling = dataclasses.replace(base, **changes)
        entry = result["rows"].setdefault(row, {"nfe": model.num_network_evaluations(sampling)})
        if args.time:
            generate(model, 8, sampling=sampling)  # warm-up
            started = time.perf_counter()
            generate(model, TIME_BATCH, sampling=sampling, seed=1)
            entry["seconds_per_1000"] = round(
                1000 * (time.perf_counter() - started) / TIME_BATCH, 2
            )
        elif "fid" not in entry:
            scores, _ = draw_and_score(model, args.num_samples, sampling=sampling, seed=args.seed)
            entry.update({k: scores[k] for k in METRICS})
        else:
            continue
        print(row, entry, flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    if args.time:
        result["timing"] = {"threads": torch.get_num_threads(), "batch": TIME_BATCH}
        path.write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out, args.grid)


def report(result: dict, out: Path, grid: str = "default") -> None:
    order = [name for name, _, _ in settings(grid)]
    rows = dict(
        sorted(
            result["rows"].items(),
            key=lambda item: order.index(item[0]) if item[0] in order else -1,
        )
    )
    # 1000 ancestral steps, or where that long row was left out, the most steps DPM-Solver++ ran
    reference_row = next(
        (r for r in ("ddpm ancestral 1000", "ddpm dpmpp_2m 50") if "fid" in rows.get(r, {})),
        None,
    )
    reference = rows[reference_row]["fid"] if reference_row else None
    lines = [
        f"| row | network evaluations | FID | vs {reference_row or 'reference'} | KID | "
        "precision | recall "
        "| coverage | cond. acc. | s / 1000 images |",
        "|" + "---|" * 10,
    ]
    for name, r in rows.items():
        if "fid" not in r:
            continue
        ratio = f"{r['fid'] / reference:.2f}x" if reference else ""
        seconds = r.get("seconds_per_1000")
        lines.append(
            f"| {name} | {r['nfe']} | {r['fid']:.3f} | {ratio} | {r['kid_mean']:.4f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['coverage']:.3f} | "
            f"{r['conditional_accuracy']:.3f} | "
            f"{'' if seconds is None else f'{seconds:.1f}'} |"
        )
    # The page's own title and prose live in the JSON ("title", "notes"), so a re-run
    # rewrites the table and keeps them.
    text = [
        f"# {result.get('title', 'Few-step sampling: zoo DDPM and zoo hybrid')}",
        "",
        *([result["notes"].strip(), ""] if result.get("notes") else []),
        f"N = {result['num_samples']} samples a row, seed {result['seed']}, balanced "
        f"classes, backend {result['backend']}; timing: "
        f"{result.get('timing', 'not yet measured')}.",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/step_sweep.py', *sys.argv[1:]])}` "
        "(FIDs), then the same with `--time` on a quiet machine.",
        "",
        *lines,
        "",
        "![FID against network evaluations and seconds](step_sweep.png)",
        "",
    ]
    (out / "README.md").write_text("\n".join(text))
    plot(rows, reference, out / "step_sweep.png")
    print("\n".join(text))


def plot(rows: dict, reference: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = all("seconds_per_1000" in r for r in rows.values() if "fid" in r)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(11 if timed else 6, 4.2), squeeze=False)
    series = {
        "DDPM, DDIM": "ddpm ddim",
        "DDPM, DPM-Solver++ 2M": "ddpm dpmpp_2m",
        **{f"hybrid, strength {x}": f"hybrid {x} " for x in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)},
        "DDPM distilled (fashiongen distill)": "distilled",
        "DDPM, 1000-step ancestral": "ddpm ancestral",
        "GAN draft alone": "hybrid draft",
    }
    for ax, key, label in zip(
        axes[0],
        ("nfe", "seconds_per_1000"),
        ("network evaluations per image", "seconds per 1000 images"),
        strict=False,
    ):  # one panel until the rows are timed
        for name, prefix in series.items():
            points = sorted(
                (r[key], r["fid"])
                for n, r in rows.items()
                if n.startswith(prefix) and "fid" in r and key in r
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, "o-" if len(points) > 1 else "s", label=name)
        if reference:
            ax.axhline(reference, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")  # FIDs span 0.5 to 30: the good end matters
        ax.set_xlabel(label)
        ax.set_ylabel("FID (feature-net space, lower is better)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
