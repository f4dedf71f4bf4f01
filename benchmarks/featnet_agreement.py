"""Do two independently trained feature nets rank sample sets alike? The metric's robustness check.

    for m in gan dcgan vae ddpm hybrid gan-uncond dcgan-uncond vae-uncond ddpm-uncond \
             hybrid-uncond; do   # the names `fashiongen zoo` lists
        fashiongen sample $m --num-samples 2000 --seed 0 --out samples/$m.npz; done
    fashiongen featnet train --data fashion-mnist --epochs 8 --seed 1 --threads 1 \\
        --widths 24,48,160 --feature-dim 192 \\
        --out benchmarks/featnets/fashion-mnist-independent.safetensors
    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/featnet_agreement.py --samples samples \\
        --json docs/results/featnet_agreement.json > agreement.log &

A metric that reflects one network's quirks disagrees with a sibling trained from another
seed with another architecture. This scores every zoo model's 2000 samples (seed 0) and every
rung of the degradation ladder (`calibrate_metrics.ladder_rows`, N = 2000 against the test
split) with the shipped feature net and with the independent one (not used by default
anywhere else), in the default metric space of each, and prints the Spearman rank
correlation of FID, precision and recall between the two over the zoo plus the ladder (and
over the zoo alone), then one row per set. The real-floor rows are left out of the
correlations (five draws of one set). About 10 minutes on one thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from calibrate_metrics import ladder_rows

from fashiongen.data import load_dataset
from fashiongen.metrics import evaluate
from fashiongen.nets.featnet import FeatNet, load_featnet, load_featnet_file
from fashiongen.zoo import manifest

INDEPENDENT = Path(__file__).resolve().parent / "featnets" / "fashion-mnist-independent.safetensors"
AGREEMENT_KEYS = ("fid", "precision", "recall")


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: Pearson's of the tie-averaged ranks."""
    ra, rb = ranks(np.asarray(a, dtype=float)), ranks(np.asarray(b, dtype=float))
    return float(np.corrcoef(ra, rb)[0, 1])


def zoo_rows(samples: Path, featnet: FeatNet) -> list[dict]:
    """Every zoo model's sample file in `samples`, scored (no memorisation)."""
    rows = []
    for name in manifest():
        with np.load(samples / f"{name}.npz", allow_pickle=False) as data:
            images = torch.from_numpy(data["images"])
            labels = torch.from_numpy(data["labels"]).long() if "labels" in data.files else None
        result = evaluate(images, labels=labels, featnet=featnet, use_memorisation=False)
        rows.append({"set": f"zoo {name}", **{k: result[k] for k in AGREEMENT_KEYS}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def scored_sets(samples: Path, featnet: FeatNet, test, train) -> list[dict]:
    """Zoo rows, then the ladder's rungs (floors left out), each {set, fid, precision, recall}."""
    rungs = [
        {"set": f"{r['degradation']} {r['strength']:g}", **{k: r[k] for k in AGREEMENT_KEYS}}
        for r in ladder_rows(test, train, featnet=featnet)
        if r["strength"] is not None
    ]
    return zoo_rows(samples, featnet) + rungs


def markdown(default: list[dict], independent: list[dict], correlations: dict) -> str:
    lines = ["| Spearman | zoo + ladder | zoo only |", "|---|---|---|"]
    lines += [f"| {key} | {c['all']:.3f} | {c['zoo']:.3f} |" for key, c in correlations.items()]
    lines += [
        "",
        "| set | FID (shipped) | FID (independent) | precision | | recall | |",
        "|" + "---|" * 7,
    ]
    for a, b in zip(default, independent, strict=True):
        lines.append(
            f"| {a['set']} | {a['fid']:.3f} | {b['fid']:.3f} | {a['precision']:.3f} | "
            f"{b['precision']:.3f} | {a['recall']:.3f} | {b['recall']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True, help="folder of NAME.npz files")
    parser.add_argument("--featnet", type=Path, default=INDEPENDENT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test, train = load_dataset("fashion-mnist", "test"), load_dataset("fashion-mnist", "train")
    nets = {
        "shipped": load_featnet("fashion-mnist"),
        "independent": load_featnet_file(args.featnet),
    }
    scored = {label: scored_sets(args.samples, net, test, train) for label, net in nets.items()}
    default, independent = scored["shipped"], scored["independent"]
    num_zoo = sum(r["set"].startswith("zoo ") for r in default)
    correlations = {
        key: {
            "all": spearman([r[key] for r in default], [r[key] for r in independent]),
            "zoo": spearman(
                [r[key] for r in default[:num_zoo]], [r[key] for r in independent[:num_zoo]]
            ),
        }
        for key in AGREEMENT_KEYS
    }
    print(markdown(default, independent, correlations))
    if args.json:
        record = {
            "featnets": {
                label: {
                    "fingerprint": net.fingerprint(),
                    "widths": net.widths,
                    "feature_dim": net.feature_dim,
                    "test_accuracy": net.test_accuracy,
                }
                for label, net in nets.items()
            },
            "spearman": correlations,
            "shipped": default,
            "independent": independent,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
