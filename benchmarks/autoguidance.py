"""Autoguidance (Karras et al., arXiv 2406.02507): guide a DDPM with a weaker one of itself.

    python benchmarks/autoguidance.py --main runs/sweep-ddpm-training/v0 \
        --guide runs/guide-2.5min --scales 1 1.5 2 2.5 --out docs/results/autoguidance.json

The x0 prediction becomes guide + w (main - guide), where the guide is the same run stopped
early (a quarter of its CPU budget: the same seed trains the same steps, so it is the run's
own early checkpoint); w = 1 is the main model alone. An unconditional model has no
classifier-free guidance, so this is the only guidance it can take; it costs a second
network call per step. Each row draws N samples (seed 0) with the main model's sampler
settings and is scored as every other table (FID, precision, recall, coverage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fashiongen.checkpoint import load_model
from fashiongen.evaluation import draw_and_score

METRICS = ("fid", "precision", "recall", "coverage")


def guided(main, guide, scale: float):
    """main's denoise replaced by the autoguided one (for this benchmark's rows only)."""
    plain = type(main).denoise

    def denoise(x_t, t, labels=None, guidance_scale=1.0):
        good = plain(main, x_t, t, labels, guidance_scale)
        if scale == 1:
            return good
        bad = guide.denoise(x_t, t, labels, guidance_scale)
        return (bad + scale * (good - bad)).clamp(-1, 1)

    main.denoise = denoise
    return main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main", type=Path, required=True)
    parser.add_argument("--guide", type=Path, required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5])
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": {}}
    result.update(main=str(args.main), guide=str(args.guide), num_samples=args.num_samples)
    guide, _ = load_model(args.guide)
    for scale in args.scales:
        model, checkpoint = load_model(args.main)
        sampling = checkpoint.config.sample
        scores, _ = draw_and_score(
            guided(model, guide, scale),
            args.num_samples,
            sampling=sampling,
            seed=0,
            use_memorisation=False,
        )
        result["rows"][f"{scale:g}"] = {k: scores[k] for k in METRICS}
        result["sampling"] = f"{sampling.sampler} {sampling.num_steps} steps"
        print(scale, result["rows"][f"{scale:g}"], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
