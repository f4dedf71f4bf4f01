"""Re-score every shipped zoo model with the current metric and update the manifest.

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/rescore_zoo.py > rescore_zoo.log &

The weights are untouched: each model draws 2000 class-balanced samples (seed 0, its own
sampler settings, `fashiongen.evaluation.draw_and_score`) and its `fid_check` 500 (seed 0,
`fashiongen.zoo.release.check_fid`, what tests/integration/test_zoo.py compares against); the
manifest's `metrics`, `fid_check` and `metric` (name and version of the feature space) are
replaced, the other fields kept. Prints the README's zoo table columns. About 15 minutes on
one thread (the diffusion models dominate).
"""

from __future__ import annotations

import argparse
import json

import torch

from fashiongen.checkpoint import load_model
from fashiongen.evaluation import draw_and_score
from fashiongen.metrics import METRIC_NAME, METRIC_VERSION
from fashiongen.zoo import manifest, zoo_path
from fashiongen.zoo.release import (
    CHECK_NUM_SAMPLES,
    check_fid,
    manifest_scores,
    write_manifest,
    zoo_sampling,
)

NUM_SAMPLES = 2000


def rescore(name: str, seed: int) -> tuple[dict, dict]:
    """(the manifest's `metrics`, its `fid_check`) for zoo model `name`."""
    model, checkpoint = load_model(zoo_path(name))
    scores, _ = draw_and_score(
        model, NUM_SAMPLES, sampling=zoo_sampling(checkpoint.config), seed=seed
    )
    metrics = manifest_scores(scores, num_samples=NUM_SAMPLES, seed=seed)
    check = {
        "num_samples": CHECK_NUM_SAMPLES,
        "seed": seed,
        "fid": check_fid(name, CHECK_NUM_SAMPLES, seed),
    }
    return metrics, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", help="default: every zoo model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = manifest()
    for name in args.models or list(entries):
        metrics, check = rescore(name, args.seed)
        entries[name].update(
            metrics=metrics,
            fid_check=check,
            metric={"name": METRIC_NAME, "version": METRIC_VERSION},
        )
        write_manifest(entries)  # after each model, so an interruption keeps what is done
        print(json.dumps({"model": name, **metrics, "fid_check": check["fid"]}), flush=True)
    print("| zoo model | FID | HF ratio | precision | recall | coverage | class acc. |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in entries.items():
        m = entry["metrics"]
        accuracy = (
            "—" if m.get("conditional_accuracy") is None else f"{m['conditional_accuracy']:.2f}"
        )
        print(
            f"| `{name}` | {m['fid']:.2f} | {m.get('laplacian_ratio', float('nan')):.2f} | "
            f"{m['precision']:.2f} | {m['recall']:.2f} | {m['coverage']:.2f} | {accuracy} |"
        )


if __name__ == "__main__":
    main()
