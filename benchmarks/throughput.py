"""Training throughput of every family's preset on this machine, beside its fp32 roof.

    python benchmarks/throughput.py [--seconds 10] [--presets dcgan gan vae ddpm hybrid]

For each preset: parameters, training images/s (batch from the preset, random data of the
dataset's shape, after warm-up), and the minutes its epochs take at that rate. The machine's
fp32 matmul GFLOP/s is measured in the same run, so a noisy shared machine shows up as a low
roof rather than as a silently slow model.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fashiongen.config import PRESETS_DIR, config_from_dict, read_toml
from fashiongen.models import build_model

FASHION_MNIST_TRAIN = 60_000
MATMUL_SIZE = 2048


def matmul_gflops(seconds: float = 2.0) -> float:
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * MATMUL_SIZE**3 * count / (time.perf_counter() - started) / 1e9


def training_rate(preset: str, seconds: float) -> dict:
    cfg = config_from_dict(read_toml(PRESETS_DIR / f"{preset}.toml"))
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28))
    optimizers = model.make_optimizers(cfg.train)
    batch_size = cfg.train.batch_size
    x0 = torch.rand(batch_size, 1, 28, 28) * 2 - 1
    labels = torch.randint(10, (batch_size,))
    for _ in range(3):
        model.train_step((x0, labels), optimizers)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.train_step((x0, labels), optimizers)
        steps += 1
    rate = steps * batch_size / (time.perf_counter() - started)
    return {"preset": preset, "parameters": sum(p.numel() for p in model.parameters()),
            "batch_size": batch_size, "images_per_s": round(rate, 1),
            "epochs": cfg.train.epochs,
            "minutes_for_preset": round(cfg.train.epochs * FASHION_MNIST_TRAIN / rate / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--presets", nargs="+",
                        default=["gan", "dcgan", "vae", "ddpm", "hybrid"])
    args = parser.parse_args()
    roof_before = matmul_gflops()
    rows = [training_rate(p, args.seconds) for p in args.presets]
    roof_after = matmul_gflops()
    result = {"threads": torch.get_num_threads(), "matmul_gflops_before": round(roof_before, 1),
              "matmul_gflops_after": round(roof_after, 1), "presets": rows}
    print(json.dumps(result, indent=2))
    print(f"\nfp32 matmul roof: {roof_before:.0f} / {roof_after:.0f} GFLOP/s (before / after)\n")
    print("| preset | parameters | batch | images/s | epochs | minutes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['parameters']:,} | {r['batch_size']} | "
              f"{r['images_per_s']:.0f} | {r['epochs']} | {r['minutes_for_preset']} |")


if __name__ == "__main__":
    main()
