"""Does a speed option pay on this CPU? Training images/s of the conv families with and without.

    python benchmarks/speed_options.py --out docs/results      (quiet machine, ~5 min)

Options, each against the plain configuration in the same process and run: `channels_last`
memory format; Adam with `fused=True` instead of the `foreach=True` the families use;
`torch.compile` of each network as `train.compile` does it (cold: an empty inductor cache,
as on a user's first run; compile seconds, steady images/s, and how many images until the
compile time is paid back, against the quick preset's images); 1 thread against 2 threads
per image. Only options that pay are kept in the families: see the table.

    python benchmarks/speed_options.py --precision bf16 --out docs/results   (issue 19)

measures the same options with every step under bf16 autocast, as `train.precision` runs
it, and writes speed_options_bf16.*: whether channels_last or compile pay where the matrix
units do the convolutions.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")  # before torch
import torch  # noqa: E402

from fashiongen.config import PRESETS_DIR, config_from_dict, read_toml  # noqa: E402
from fashiongen.models import build_model  # noqa: E402

PRESETS = ["dcgan", "ddpm", "gan", "vae"]


def _setup(preset: str, option: str, precision: str):
    cfg = config_from_dict(read_toml(PRESETS_DIR / f"{preset}.toml"))
    quick = config_from_dict(read_toml(PRESETS_DIR / f"{preset}-quick.toml"))
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28))
    x0 = torch.rand(cfg.train.batch_size, 1, 28, 28) * 2 - 1
    labels = torch.randint(10, (cfg.train.batch_size,))
    if option == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x0 = x0.contiguous(memory_format=torch.channels_last)
    if option == "compile":
        model.compile_networks()
    optimizers = model.make_optimizers(cfg.train)
    if option == "fused_adam":
        optimizers = {
            k: type(o)(
                [
                    {h: v for h, v in group.items() if h not in ("foreach", "fused")}
                    for group in o.param_groups
                ],
                fused=True,
            )
            for k, o in optimizers.items()
        }
    quick_images = quick.train.epochs * 60_000

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model.train_step((x0, labels), optimizers)

    return step, cfg.train.batch_size, quick_images


def measure(preset: str, option: str, seconds: float, threads: int, precision: str) -> dict:
    torch.set_num_threads(threads)
    step, batch_size, quick_images = _setup(preset, option, precision)
    started = time.perf_counter()
    for _ in range(3):
        step()
    warmup = time.perf_counter() - started
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    rate = steps * batch_size / (time.perf_counter() - started)
    return {
        "preset": preset,
        "option": option,
        "threads": threads,
        "precision": precision,
        "images_per_s": round(rate, 1),
        "warmup_seconds": round(warmup, 2),
        "quick_preset_images": quick_images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    bf16 = args.precision == "bf16"
    threads = torch.get_num_threads()
    rows = []
    for preset in args.presets:
        base = measure(preset, "plain", args.seconds, threads, args.precision)
        rows.append(base)
        for option in ("channels_last", "fused_adam", "compile"):
            try:
                row = measure(preset, option, args.seconds, threads, args.precision)
            except Exception as e:  # e.g. no C++ compiler for inductor
                row = {"preset": preset, "option": option, "error": str(e).splitlines()[0]}
            rows.append(row)
        one = measure(preset, "plain", args.seconds, 1, args.precision)
        one["option"] = "1 thread"
        rows.append(one)
        torch.set_num_threads(threads)
        for row in rows[-4:]:
            if "images_per_s" in row:
                row["speedup"] = round(row["images_per_s"] / base["images_per_s"], 3)
        print(rows[-5:], flush=True)
    lines = [
        ("every step under bf16 autocast; " if bf16 else "")
        + f"threads: {threads}; speedup = images/s over the plain configuration; for "
        "1 thread it is the per-process rate, per core it is twice that.",
        "",
        "| preset | option | images/s | speedup | warm-up s | compile paid back after |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['preset']} | {row['option']} | failed: {row['error']} | | | |")
            continue
        payback = ""
        if row["option"] == "compile":
            base = next(r for r in rows if r["preset"] == row["preset"] and r["option"] == "plain")
            gain = 1 / base["images_per_s"] - 1 / row["images_per_s"]
            payback = (
                f"{row['warmup_seconds'] / gain:,.0f} images (quick preset: "
                f"{row['quick_preset_images']:,})"
                if gain > 0
                else "never"
            )
        lines.append(
            f"| {row['preset']} | {row['option']} | {row['images_per_s']:.0f} | "
            f"{row.get('speedup', 1.0):.2f} | {row['warmup_seconds']:.1f} | {payback} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "speed_options_bf16" if bf16 else "speed_options"
    (args.out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
