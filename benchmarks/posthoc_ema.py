"""Post-hoc EMA from a run's kept checkpoints: a longer average for free, chosen after training.

    python benchmarks/posthoc_ema.py --run runs/zoo-ddpm2 --windows 1 4 8 16 \
        --guide runs/zoo-ddpm2/checkpoints/step_0012000 --set sample.guide_scale=2 \
        --out docs/results/posthoc_ema.json

EDM2 (Karras et al., arXiv 2312.02696, sec. 3) picks a model's EMA length after training,
from snapshots saved on the way. The simple form here: the sampling weights of the final
checkpoint averaged with those of the last N - 1 periodic checkpoints (each already an EMA),
so N = 1 is the run as it stands and a larger N a longer, flatter average over its last
N x `checkpoint_every_n_steps` steps (the run must keep them: `train.keep_checkpoints`).
Each row draws N samples (seed 0) with the run's sampling settings (changed by `--set`, the
guide attached as `sample --guide` does) and is scored as every other table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from fashiongen.checkpoint import attach_guide, list_checkpoints, load_checkpoint, load_model
from fashiongen.config import config_from_dict, config_to_dict, merge_overrides
from fashiongen.evaluation import draw_and_score

METRICS = ("fid", "precision", "recall", "coverage", "conditional_accuracy", "intra_class_spread")


def averaged_weights(run: Path, window: int) -> dict[str, torch.Tensor]:
    """The mean of the sampling (EMA) weights of the final and the last window - 1 periodic
    checkpoints."""
    folders = [run / "final", *reversed(list_checkpoints(run))][:window]
    if len(folders) < window:
        raise SystemExit(f"{run} keeps {len(folders)} checkpoints, fewer than {window}")
    total: dict[str, torch.Tensor] = {}
    for folder in folders:
        checkpoint, _ = load_checkpoint(folder)
        for key, tensor in {**checkpoint.weights, **checkpoint.ema}.items():
            value = tensor.double() if tensor.is_floating_point() else tensor
            total[key] = total[key] + value if key in total and value.is_floating_point() else value
    return {k: (v / window).float() if v.is_floating_point() else v for k, v in total.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--guide", type=Path, help="a weaker model to autoguide with")
    parser.add_argument("--set", action="append", default=[], metavar="sample.KEY=VALUE")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, checkpoint = load_model(args.run / "final")  # with its own guide, if it keeps one
    if args.guide:
        attach_guide(model, args.guide)
    sampling = config_from_dict(merge_overrides(config_to_dict(checkpoint.config), args.set)).sample
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": {}}
    result.update(run=str(args.run), guide=str(args.guide), sampling=dataclasses.asdict(sampling))
    result["checkpoint_every_n_steps"] = checkpoint.config.train.checkpoint_every_n_steps
    for window in args.windows:
        model.load_state_dict(averaged_weights(args.run, window))
        scores, _ = draw_and_score(
            model, args.num_samples, sampling=sampling, seed=0, use_memorisation=False
        )
        result["rows"][str(window)] = {k: scores[k] for k in METRICS}
        print(window, result["rows"][str(window)], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
