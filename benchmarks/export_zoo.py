"""Copy trained runs into the package's model zoo (float16 sampling weights + manifest).

    python benchmarks/export_zoo.py --runs runs/gpu --results docs/results/family_table.json

Each run folder named after a family becomes the zoo model of that name. The manifest
records the preset, the exact command, the commit, the device and training time (from the
run's summary.json) and the metrics measured by benchmarks/family_table.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from fashiongen.zoo import (
    CHECK_NUM_SAMPLES,
    check_fid,
    export,
    manifest,
    total_bytes,
    write_manifest,
)

FAMILIES = ("gan", "dcgan", "vae", "ddpm", "hybrid")
DESCRIPTIONS = {
    "gan": "MLP GAN, class-conditional",
    "dcgan": "DCGAN, class-conditional (spectral-norm D)",
    "vae": "convolutional VAE, class-conditional",
    "ddpm": "DDPM U-Net, class-conditional with guidance",
    "hybrid": "DCGAN draft + truncated diffusion refiner",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--results", type=Path, default=Path("docs/results/family_table.json"))
    parser.add_argument("--device", default="NVIDIA H100 (lent GPU machine), fp32")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    for family in FAMILIES:
        run = args.runs / family
        summary = json.loads((run / "summary.json").read_text())
        metrics = results["families"][family]
        info = {
            "summary": DESCRIPTIONS[family],
            "preset": f"configs/{family}.toml",
            "command": f"fashiongen train --config {family} --out runs/{family}",
            "commit": commit,
            "device": args.device,
            "train_seconds": round(summary["train_seconds"], 1),
            "epochs": summary["epochs"],
            "metrics": {"num_samples": results["num_samples"], "seed": results["seed"],
                        **{k: metrics[k] for k in ("fid", "kid_mean", "precision", "recall",
                                                   "coverage", "conditional_accuracy")}},
        }
        path = export(run, family, info)
        entries = manifest()
        entries[family]["fid_check"] = {"num_samples": CHECK_NUM_SAMPLES, "seed": 0,
                                        "fid": check_fid(family)}
        write_manifest(entries)
        print(path, entries[family]["fid_check"])
    print(f"zoo size: {total_bytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
