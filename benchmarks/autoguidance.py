"""Autoguidance (Karras et al., arXiv 2406.02507): guide a DDPM with a weaker one of itself.

    python benchmarks/autoguidance.py --main runs/sweep-ddpm-training/v0 \
        --guide runs/guide-2.5min --scales 1 1.5 2 2.5 --out docs/results/autoguidance.json

The x0 prediction becomes guide + w (main - guide) (the library's autoguidance:
`sample.guide_scale`, the guide attached as `sample --guide` does), where the guide is the
same run stopped early (a quarter of its CPU budget: the same seed trains the same steps,
so it is the run's own early checkpoint); w = 1 is the main model alone. An unconditional
model has no classifier-free guidance, so this is the only guidance it can take; it costs a second
network call per step. Each row draws N samples (seed 0) with the main model's sampler
settings and is scored as every other table (FID, precision, recall, coverage); for a
conditional model `--guidance` crosses the scales with classifier-free guidance's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fashiongen.checkpoint import attach_guide, load_model
from fashiongen.evaluation import draw_and_score

METRICS = ("fid", "precision", "recall", "coverage", "conditional_accuracy", "intra_class_spread")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main", type=Path, required=True)
    parser.add_argument("--guide", type=Path, required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5])
    parser.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        help="classifier-free guidance scales to cross with --scales (conditional models; "
        "default: the main model's own)",
    )
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": {}}
    result.update(main=str(args.main), guide=str(args.guide), num_samples=args.num_samples)
    model, checkpoint = load_model(args.main, with_guide=False)
    attach_guide(model, args.guide)
    own = checkpoint.config.sample
    for guidance in args.guidance or [own.guidance_scale]:
        for scale in args.scales:
            sampling = dataclasses.replace(own, guidance_scale=guidance, guide_scale=scale)
            scores, _ = draw_and_score(
                model, args.num_samples, sampling=sampling, seed=0, use_memorisation=False
            )
            key = f"{scale:g}" if args.guidance is None else f"cfg {guidance:g}, w {scale:g}"
            result["rows"][key] = {k: scores[k] for k in METRICS}
            result["sampling"] = f"{sampling.sampler} {sampling.num_steps} steps"
            print(key, result["rows"][key], flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
