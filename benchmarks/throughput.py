"""Training and sampling throughput of every family and every peer, beside this machine's roof.

    python benchmarks/throughput.py --out benchmarks/results      (make bench; ~10 minutes)

One run measures, in this order:
- the fp32 roof: a 2048^3 matmul and a 3x3 convolution, in GFLOP/s (again at the end);
- training, each row in its own process (so its peak memory is its own): parameters, FLOPs
  per training image (torch.utils.flop_counter over one step), images/s after warm-up,
  achieved GFLOP/s and % of the roof, the process's peak resident memory (a bare process
  with torch imported is given beside it);
  rows: the five families' full presets, the four peers (benchmarks/peers/), and the
  project's own code on each peer's architecture (the GAN peers' networks trained by
  `adversarial_step`, our U-Net at the diffusers U-Net's parameter count);
- sampling: images/s for 64 images per family, per sampler and step count for diffusion,
  with the torch and the onnx backend, the diffusers peer's DDIM beside them, and the
  seconds `fashiongen sample --model NAME` needs for 64 images from each zoo model.

Writes OUT/throughput.json and OUT/throughput.md, and puts the table in benchmarks/README.md
between its `bench:start` / `bench:end` markers.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAMILIES = ["gan", "dcgan", "vae", "ddpm", "hybrid"]
PEERS = ["mlp-gan", "tf-dcgan", "keras-vae", "diffusers-ddpm"]
# The project's code on a peer's architecture, and the peer it is measured against.
OURS_ON_PEER = {"ours:mlp-gan": "mlp-gan", "ours:tf-dcgan": "tf-dcgan",
                "ours:diffusers-ddpm": "diffusers-ddpm"}
EQUAL_PARAMS_DDPM_WIDTH = 38  # our U-Net at 0.656M parameters, the diffusers one's 0.649M
DIFFUSION_SWEEP = [("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp_2m", 10),
                   ("dpmpp_2m", 20), ("dpmpp_2m", 50), ("ancestral", 1000)]
SAMPLE_BATCH = 64
MATMUL_SIZE = 2048


# ---------------------------------------------------------------- the roof


def _rate(work, flops: float, seconds: float) -> float:
    work()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        work()
        count += 1
    return flops * count / (time.perf_counter() - started) / 1e9


def roof(seconds: float = 2.0) -> dict[str, float]:
    """fp32 GFLOP/s of a large matmul and of a 3x3 convolution (64 images, 128 channels, 28^2)."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    x, w = torch.randn(64, 128, 28, 28), torch.randn(128, 128, 3, 3)
    with torch.no_grad():
        return {"matmul": round(_rate(lambda: a @ b, 2 * MATMUL_SIZE**3, seconds), 1),
                "conv3x3": round(_rate(lambda: F.conv2d(x, w, padding=1),
                                       2 * 64 * 128 * 128 * 9 * 28 * 28, seconds), 1)}


# ---------------------------------------------------------------- one training row


def _family_step(preset: str, width: int | None = None):
    from fashiongen.config import PRESETS_DIR, config_from_dict, merge_overrides, read_toml
    from fashiongen.models import build_model

    data = read_toml(PRESETS_DIR / f"{preset}.toml")
    if width is not None:
        data = merge_overrides(data, [f"model.base_width={width}", "model.num_classes=0"])
    cfg = config_from_dict(data)
    model = build_model(cfg.model, (1, 28, 28))
    optimizers = model.make_optimizers(cfg.train)
    x0 = torch.rand(cfg.train.batch_size, 1, 28, 28) * 2 - 1
    labels = torch.randint(10, (cfg.train.batch_size,))
    return (lambda: model.train_step((x0, labels), optimizers)), cfg.train.batch_size, model


def _peer_step(name: str):
    from peers import PEERS as PEER_CLASSES

    peer = PEER_CLASSES[name](seed=0)
    x0 = torch.rand(peer.batch_size, 1, 28, 28) * 2 - 1
    return (lambda: peer.train_step(x0)), peer.batch_size, peer.networks.values()


def _ours_on_gan_peer(name: str):
    """The peer's own G and D, trained by the families' `adversarial_step` (one D pass over
    real and fake together, D frozen for G's backward) with foreach Adam."""
    from peers import PEERS as PEER_CLASSES

    from fashiongen.models.adversarial import adversarial_step

    peer = PEER_CLASSES[name](seed=0)
    optimizers = {k: torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999),
                                      foreach=True) for k, net in peer.networks.items()}
    x0 = torch.rand(peer.batch_size, 1, 28, 28) * 2 - 1

    def step():
        z = torch.randn(peer.batch_size, peer.latent_dim)
        return adversarial_step(peer.generator, peer.discriminator, x0, None, z, optimizers)

    return step, peer.batch_size, peer.networks.values()


def training_row(row: str, seconds: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # torch imported, no model
    if row in FAMILIES:
        step, batch_size, model = _family_step(row)
        modules = [model]
    elif row in PEERS:
        step, batch_size, modules = _peer_step(row)
    elif row == "ours:diffusers-ddpm":
        step, batch_size, model = _family_step("ddpm", EQUAL_PARAMS_DDPM_WIDTH)
        modules = [model]
    else:
        step, batch_size, modules = _ours_on_gan_peer(OURS_ON_PEER[row])
    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    images_per_s = steps * batch_size / (time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flops = counter.get_total_flops() / batch_size
    return {"row": row, "parameters": sum(p.numel() for m in modules for p in m.parameters()),
            "batch_size": batch_size, "images_per_s": round(images_per_s, 1),
            "mflop_per_image": round(flops / 1e6, 2),
            "gflops": round(flops * images_per_s / 1e9, 2),
            "peak_mib": round(peak / 1024, 1), "bare_process_mib": round(baseline / 1024, 1)}


# ---------------------------------------------------------------- sampling


def _images_per_s(draw, count: int, repeats: int = 2) -> float:
    draw()  # warm-up (and, for onnx, the export)
    started = time.perf_counter()
    for _ in range(repeats):
        draw()
    return round(count * repeats / (time.perf_counter() - started), 1)


def sampling_rows() -> list[dict]:
    import dataclasses

    from fashiongen.checkpoint import load_model
    from fashiongen.config import PRESETS_DIR, config_from_dict, read_toml
    from fashiongen.export import use_onnx
    from fashiongen.generate import generate
    from fashiongen.models import build_model
    from fashiongen.zoo import available, zoo_path

    rows = []
    for family in FAMILIES:
        cfg = config_from_dict(read_toml(PRESETS_DIR / f"{family}.toml"))
        torch.manual_seed(0)
        sweep = DIFFUSION_SWEEP if family == "ddpm" else [(cfg.sample.sampler,
                                                           cfg.sample.num_steps)]
        for backend in ("torch", "onnx"):
            model = build_model(cfg.model, (1, 28, 28)).eval()
            if backend == "onnx":
                use_onnx(model)
            for sampler, steps in sweep:
                if backend == "onnx" and sampler == "ancestral":
                    continue
                sampling = dataclasses.replace(cfg.sample, sampler=sampler, num_steps=steps)
                rate = _images_per_s(partial(generate, model, SAMPLE_BATCH, sampling=sampling),
                                     SAMPLE_BATCH, repeats=1 if steps >= 1000 else 2)
                how = "one pass" if not model.sampling_fields else f"{sampler} {steps}"
                rows.append({"row": family, "backend": backend, "sampling": how,
                             "nfe": model.num_network_evaluations(sampling),
                             "images_per_s": rate})
    from peers import PEERS as PEER_CLASSES

    peer = PEER_CLASSES["diffusers-ddpm"](seed=0)
    for steps in (20, 50):
        rate = _images_per_s(partial(peer.sample, SAMPLE_BATCH, torch.Generator().manual_seed(0),
                                     num_steps=steps), SAMPLE_BATCH)
        rows.append({"row": "diffusers-ddpm (peer)", "backend": "torch",
                     "sampling": f"DDIM {steps}", "nfe": steps, "images_per_s": rate})
    for name in sorted(available()):
        for backend in ("torch", "onnx"):
            started = time.perf_counter()
            model, checkpoint = load_model(zoo_path(name))
            if backend == "onnx":
                use_onnx(model)  # cached after the first time
            generate(model, SAMPLE_BATCH, sampling=checkpoint.config.sample)
            rows.append({"row": f"zoo {name}", "backend": backend,
                         "sampling": "its own settings", "nfe": None,
                         "seconds_for_64": round(time.perf_counter() - started, 2)})
    return rows


# ---------------------------------------------------------------- the report


def markdown(result: dict) -> str:
    roof_value = max(result["roof_before"]["conv3x3"], result["roof_before"]["matmul"])
    train = {r["row"]: r for r in result["training"]}
    lines = [
        f"Measured {result['date']} on {result['machine']}, {result['threads']} threads, "
        f"torch {result['torch']}. fp32 roof in the same run: matmul "
        f"{result['roof_before']['matmul']:.0f} / {result['roof_after']['matmul']:.0f} GFLOP/s, "
        f"3x3 conv {result['roof_before']['conv3x3']:.0f} / "
        f"{result['roof_after']['conv3x3']:.0f} (before / after); % of roof below uses "
        f"{roof_value:.0f}. Peak MiB is the whole training process's resident peak; a bare "
        f"process with torch imported: {result['training'][0]['bare_process_mib']:.0f} MiB.",
        "",
        "### Training (random data of Fashion-MNIST's shape, after warm-up)", "",
        "| row | parameters | batch | MFLOP / image | images/s | GFLOP/s | % of roof "
        "| peak MiB | vs peer |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["training"]:
        peer = OURS_ON_PEER.get(r["row"])
        ratio = f"{r['images_per_s'] / train[peer]['images_per_s']:.2f}x {peer}" \
            if peer in train else ""
        lines.append(f"| {r['row']} | {r['parameters']:,} | {r['batch_size']} | "
                     f"{r['mflop_per_image']:.1f} | {r['images_per_s']:.0f} | {r['gflops']:.1f} "
                     f"| {100 * r['gflops'] / roof_value:.0f}% | {r['peak_mib']:.0f} | {ratio} |")
    lines += ["", f"### Sampling ({SAMPLE_BATCH} images per call)", "",
              "| model | backend | sampling | network evaluations | images/s |",
              "|---|---|---|---|---|"]
    for r in result["sampling"]:
        if "images_per_s" in r:
            lines.append(f"| {r['row']} | {r['backend']} | {r['sampling']} | {r['nfe']} | "
                         f"{r['images_per_s']:.0f} |")
    lines += ["", "### 64 images from each zoo model (load + sample, as `fashiongen sample "
              "--model NAME` does)", "", "| zoo model | backend | seconds |", "|---|---|---|"]
    for r in result["sampling"]:
        if "seconds_for_64" in r:
            lines.append(f"| {r['row'][4:]} | {r['backend']} | {r['seconds_for_64']:.2f} |")
    return "\n".join(lines) + "\n"


def write_readme_section(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + table + rest[rest.index(end):], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per training row")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--row", help=argparse.SUPPRESS)  # one training row, in a subprocess
    args = parser.parse_args()
    if args.row:
        print(json.dumps(training_row(args.row, args.seconds)))
        return
    result = {"date": date.today().isoformat(), "machine": f"{platform.processor() or 'x86_64'}"
              f", {_cpu_name()}", "threads": torch.get_num_threads(), "torch": torch.__version__,
              "roof_before": roof(), "training": []}
    print("roof", result["roof_before"], flush=True)
    for row in [*FAMILIES, *PEERS, *OURS_ON_PEER]:
        out = subprocess.run([sys.executable, __file__, "--row", row, "--seconds",
                              str(args.seconds)], capture_output=True, text=True, check=True)
        result["training"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(result["training"][-1], flush=True)
    result["sampling"] = sampling_rows()
    result["roof_after"] = roof()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "throughput.md").write_text(table)
    write_readme_section(HERE / "README.md", table)
    print(table)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
