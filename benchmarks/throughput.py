"""Training and sampling throughput of every family and every peer, in fp32 and bf16, beside
this machine's roofs.

    python benchmarks/throughput.py --out docs/results      (make bench; ~15 minutes)
    python benchmarks/throughput.py --tiny --out /tmp/bench       (a check that it runs: ~1 min)

One run measures, in this order:
- both roofs: a 2048^3 matmul and a 3x3 convolution (64 images, 128 channels, 28^2), in
  GFLOP/s, in fp32 and in bf16 (the conv also channels_last), interleaved fp32 bf16 fp32 bf16;
  again at the end;
- training, each row in its own process (so its peak memory is its own): parameters, FLOPs
  per training image (torch.utils.flop_counter over one fp32 step), images/s in fp32 and in
  bf16 autocast (as `train.precision` runs it), timed in turns (A B A B ...: `--repeats`
  windows of `--seconds` each) so the machine's load hits both; median and spread (min-max)
  of the windows, achieved GFLOP/s and % of the roof of the precision used, what `auto` would
  pick (bf16 only with bf16 units and a median speedup of at least precision.MIN_SPEEDUP), the
  process's peak resident memory (a bare process with torch imported is given beside it);
  rows: the five families' full presets, the four peers (benchmarks/peers/), and the
  project's own code on each peer's architecture (the GAN peers' networks trained by
  `adversarial_step`, our U-Net at the diffusers U-Net's parameter count);
- what `auto` costs where there are no bf16 units (simulated: FASHIONGEN_PRECISION_SIMULATE=
  no-bf16-units, in its own process): precision=fp32 against precision=auto through the
  library's own paths (the decision, then a training step under `precision.autocast`; a
  `generate` call, which decides inside), in turns A B A B, for the cheapest step (the MLP
  GAN, where a fixed cost shows most) and the DDPM; the cost is 1 - auto's best window over
  fp32's, the pairs' auto / fp32 ratios beside it (issue 19's target: under 1%);
- sampling: images/s for 64 images per family, per sampler and step count for diffusion,
  fp32 and bf16 in turns (torch backend), the onnx backend (fp32), the diffusers peer's DDIM,
  256 guided 20-step samples of the zoo DDPM in both precisions, and the seconds
  `fashiongen sample --model NAME` needs for 64 images from each zoo model.

The CPU flags (avx512_bf16, amx_tile, ...) are recorded with the machine. Writes
OUT/throughput.json and OUT/throughput.md, and (not with --tiny) puts the table in
benchmarks/README.md between its `bench:start` / `bench:end` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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
OURS_ON_PEER = {
    "ours:mlp-gan": "mlp-gan",
    "ours:tf-dcgan": "tf-dcgan",
    "ours:diffusers-ddpm": "diffusers-ddpm",
    "ours-3-levels:diffusers-ddpm": "diffusers-ddpm",
}
# Our U-Net at the diffusers one's 0.649M parameters: the presets' two levels (0.656M), and
# a third level (widths 19, 38, 76 at 16, 8, 4 pixels after the stem: 0.628M), which moves
# parameters to low resolution: half the FLOPs an image per parameter (issue 16).
EQUAL_PARAMS_DDPM = {
    "ours:diffusers-ddpm": ["model.base_width=38"],
    "ours-3-levels:diffusers-ddpm": ["model.base_width=19", "model.num_levels=3"],
}
DIFFUSION_SWEEP = [
    ("ddim", 10),
    ("ddim", 20),
    ("ddim", 50),
    ("dpmpp_2m", 10),
    ("dpmpp_2m", 20),
    ("dpmpp_2m", 50),
    ("ancestral", 1000),
]
SAMPLE_BATCH = 64
MATMUL_SIZE = 2048
PRECISIONS = ("fp32", "bf16")
TINY_SWEEP = [("ddim", 2)]
AUTO_COST_FAMILIES = ("gan", "ddpm")
AUTO_COST_ROW = "auto-cost"  # the --row of the auto-cost subprocess
AUTO_COST_SAMPLING_STEPS = 10  # a diffusion family's steps per call (the cost is per call)
ZOO_GUIDED = {"num_samples": 256, "num_steps": 20, "guidance_scale": 2.0}


# ---------------------------------------------------------------- the roof


def _rate(work, flops: float, seconds: float) -> float:
    work()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        work()
        count += 1
    return flops * count / (time.perf_counter() - started) / 1e9


def roof(seconds: float = 2.0, repeats: int = 2) -> dict[str, dict[str, float]]:
    """GFLOP/s of a large matmul and of a 3x3 convolution (64 images, 128 channels, 28^2) in
    fp32 and bf16 (the conv also channels_last), the median of `repeats` interleaved windows."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    x, w = torch.randn(64, 128, 28, 28), torch.randn(128, 128, 3, 3)
    matmul_flops, conv_flops = 2 * MATMUL_SIZE**3, 2 * 64 * 128 * 128 * 9 * 28 * 28
    work = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a_, b_, x_, w_ = (t.to(dtype) for t in (a, b, x, w))
        x_last = x_.contiguous(memory_format=torch.channels_last)
        w_last = w_.contiguous(memory_format=torch.channels_last)
        work[name] = {
            "matmul": (lambda a_=a_, b_=b_: a_ @ b_, matmul_flops),
            "conv3x3": (lambda x_=x_, w_=w_: F.conv2d(x_, w_, padding=1), conv_flops),
            "conv3x3_channels_last": (
                lambda x_=x_last, w_=w_last: F.conv2d(x_, w_, padding=1),
                conv_flops,
            ),
        }
    rates: dict[str, dict[str, list[float]]] = {p: {k: [] for k in work[p]} for p in work}
    with torch.no_grad():
        for _ in range(repeats):
            for kind in work["fp32"]:
                for name in PRECISIONS:
                    fn, flops = work[name][kind]
                    rates[name][kind].append(_rate(fn, flops, seconds / repeats))
    return {
        p: {k: round(statistics.median(v), 1) for k, v in kinds.items()}
        for p, kinds in rates.items()
    }


def roof_of(roofs: dict, precision: str) -> float:
    """The precision's roof: the best of its matmul and convolutions."""
    return max(roofs[precision].values())


# ---------------------------------------------------------------- one training row


def _preset_config(preset: str, overrides: list[str] | None = None):
    """A preset's config, its sampling without autoguidance: an untrained network has no
    guide yet (a run keeps one at train.keep_guide_at), so the plain sampler is timed."""
    import dataclasses

    from fashiongen.config import PRESETS_DIR, config_from_dict, merge_overrides, read_toml

    data = read_toml(PRESETS_DIR / f"{preset}.toml")
    if overrides:
        data = merge_overrides(data, [*overrides, "model.num_classes=0"])
    cfg = config_from_dict(data)
    return dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, guide_scale=1.0))


def _family_parts(preset: str, overrides: list[str] | None = None):
    """(config, model, optimizers, a random batch) of a preset."""
    from fashiongen.models import build_model

    cfg = _preset_config(preset, overrides)
    model = build_model(cfg.model, (1, 28, 28))
    x0 = torch.rand(cfg.train.batch_size, 1, 28, 28) * 2 - 1
    labels = torch.randint(10, (cfg.train.batch_size,))
    return cfg, model, model.make_optimizers(cfg.train), (x0, labels)


def _family_step(preset: str, overrides: list[str] | None = None):
    cfg, model, optimizers, batch = _family_parts(preset, overrides)
    return (lambda: model.train_step(batch, optimizers)), cfg.train.batch_size, model


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
    optimizers = {
        k: torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
        for k, net in peer.networks.items()
    }
    x0 = torch.rand(peer.batch_size, 1, 28, 28) * 2 - 1

    def step():
        z = torch.randn(peer.batch_size, peer.latent_dim)
        return adversarial_step(peer.generator, peer.discriminator, x0, None, z, optimizers)

    return step, peer.batch_size, peer.networks.values()


def _spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _auto_pick(fp32: float, bf16: float) -> str:
    """What `precision=auto` would choose from these rates (images/s) on this machine."""
    from fashiongen import precision

    units = precision.bf16_units(torch.device("cpu"))
    return "bf16" if units and bf16 >= precision.MIN_SPEEDUP * fp32 else "fp32"


def _interleaved(
    run, seconds: float, repeats: int, arms: tuple[str, ...] = PRECISIONS
) -> dict[str, list[float]]:
    """Calls of `run(arm)` per second, in windows A B A B ... (after a warm-up of each)."""
    rates: dict[str, list[float]] = {p: [] for p in arms}
    for p in arms:
        run(p)
    for _ in range(repeats):
        for p in arms:
            calls, started = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - started < seconds:
                run(p)
                calls += 1
            rates[p].append(calls / (time.perf_counter() - started))
    return rates


def training_row(row: str, seconds: float, repeats: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # torch imported, no model
    if row in FAMILIES:
        step, batch_size, model = _family_step(row)
        modules = [model]
    elif row in PEERS:
        step, batch_size, modules = _peer_step(row)
    elif row in EQUAL_PARAMS_DDPM:
        step, batch_size, model = _family_step("ddpm", EQUAL_PARAMS_DDPM[row])
        modules = [model]
    else:
        step, batch_size, modules = _ours_on_gan_peer(OURS_ON_PEER[row])
    for _ in range(2):
        step()
    with FlopCounterMode(display=False) as counter:
        step()

    def in_precision(p: str) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16"):
            step()

    steps_per_s = _interleaved(in_precision, seconds, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flops = counter.get_total_flops() / batch_size
    out = {
        "row": row,
        "parameters": sum(p.numel() for m in modules for p in m.parameters()),
        "batch_size": batch_size,
        "mflop_per_image": round(flops / 1e6, 2),
        "peak_mib": round(peak / 1024, 1),
        "bare_process_mib": round(baseline / 1024, 1),
    }
    for p in PRECISIONS:
        images = [r * batch_size for r in steps_per_s[p]]
        out[p] = {
            "images_per_s": _spread(images),
            "gflops": round(flops * statistics.median(images) / 1e9, 2),
        }
    out["bf16_speedup"] = round(
        out["bf16"]["images_per_s"]["median"] / out["fp32"]["images_per_s"]["median"], 2
    )
    out["auto"] = _auto_pick(
        out["fp32"]["images_per_s"]["median"], out["bf16"]["images_per_s"]["median"]
    )
    return out


# ---------------------------------------------------------------- what auto costs


def auto_cost_rows(seconds: float, repeats: int) -> list[dict]:
    """precision=fp32 against precision=auto where there are no bf16 units (this process
    runs with FASHIONGEN_PRECISION_SIMULATE=no-bf16-units), training and sampling, in turns;
    `repeats` pairs of windows per row (twice the other rows', at half the window: the
    difference sought is small)."""
    from fashiongen import precision

    if os.environ.get(precision.SIMULATE_ENV) != "no-bf16-units":
        raise SystemExit(
            f"the {AUTO_COST_ROW} row runs with {precision.SIMULATE_ENV}=no-bf16-units"
        )
    rows = []
    for family in AUTO_COST_FAMILIES:
        rows.append(_auto_cost_training(family, seconds / 2, 2 * repeats))
        rows.append(_auto_cost_sampling(family, 2 * repeats))
    return rows


def _auto_cost_training(family: str, seconds: float, pairs: int) -> dict:
    """Each call decides (as a run does once) and takes one step under the decided autocast
    (as every step of a run does): a decision per step, the most `auto` could cost."""
    from fashiongen import precision

    cfg, model, optimizers, batch = _family_parts(family)
    device = torch.device("cpu")
    made: dict[str, precision.PrecisionChoice] = {}

    def step(requested: str) -> None:
        made[requested] = precision.choose_for_training(requested, model, cfg.train, batch, device)
        with precision.autocast(made[requested].choice, device):
            model.train_step(batch, optimizers)

    rates = _interleaved(step, seconds, pairs, arms=("fp32", "auto"))
    return _auto_cost(family, "training", rates, cfg.train.batch_size, made["auto"])


def _auto_cost_sampling(family: str, pairs: int) -> dict:
    """`generate` of SAMPLE_BATCH images per call, `sample.precision` fp32 or auto."""
    import dataclasses

    from fashiongen import precision
    from fashiongen.generate import generate

    cfg, model, _, _ = _family_parts(family)
    model.eval()
    sampling = cfg.sample
    if model.sampling_fields:
        sampling = dataclasses.replace(sampling, num_steps=AUTO_COST_SAMPLING_STEPS)
    rates = _interleaved(
        lambda p: generate(
            model, SAMPLE_BATCH, sampling=dataclasses.replace(sampling, precision=p)
        ),
        0.0,
        pairs,
        arms=("fp32", "auto"),
    )
    made = precision.sampling_choice(model, sampling, "auto")
    return _auto_cost(family, "sampling", rates, SAMPLE_BATCH, made)


def _auto_cost(
    family: str, phase: str, rates: dict[str, list[float]], images_per_call: int, made
) -> dict:
    """The row; the cost from each arm's fastest window (a window is only ever slowed by
    the machine's other work), the pairs' ratios beside it to show the noise."""
    ratios = [a / f for f, a in zip(rates["fp32"], rates["auto"], strict=True)]
    return {
        "row": family,
        "phase": phase,
        "auto_choice": made.choice,
        "reason": made.reason,
        **{arm: _spread([r * images_per_call for r in rates[arm]]) for arm in rates},
        "pairs": len(ratios),
        "auto_over_fp32": _spread(ratios, digits=4),
        "cost_percent": round(100 * (1 - max(rates["auto"]) / max(rates["fp32"])), 2),
    }


# ---------------------------------------------------------------- sampling


def _images_per_s(draw, count: int, repeats: int = 2) -> float:
    draw()  # warm-up (and, for onnx, the export)
    started = time.perf_counter()
    for _ in range(repeats):
        draw()
    return round(count * repeats / (time.perf_counter() - started), 1)


def _both_precisions(draw, count: int, repeats: int) -> dict:
    """images/s of `draw(sampling_precision)` in fp32 and bf16, in turns; median and spread."""
    rates = _interleaved(draw, 0.0, repeats)  # one call per window
    out = {p: _spread([r * count for r in rates[p]]) for p in PRECISIONS}
    out["bf16_speedup"] = round(out["bf16"]["median"] / out["fp32"]["median"], 2)
    out["auto"] = _auto_pick(out["fp32"]["median"], out["bf16"]["median"])
    return out


def sampling_rows(*, repeats: int, tiny: bool) -> list[dict]:
    import dataclasses

    from fashiongen.export import use_onnx
    from fashiongen.generate import generate
    from fashiongen.models import build_model

    rows = []
    for family in FAMILIES:
        cfg = _preset_config(family)
        torch.manual_seed(0)
        sweep = (
            DIFFUSION_SWEEP if family == "ddpm" else [(cfg.sample.sampler, cfg.sample.num_steps)]
        )
        if tiny:
            sweep = TINY_SWEEP if family == "ddpm" else sweep
        model = build_model(cfg.model, (1, 28, 28)).eval()
        for sampler, steps in sweep:
            sampling = dataclasses.replace(cfg.sample, sampler=sampler, num_steps=steps)
            how = "one pass" if not model.sampling_fields else f"{sampler} {steps}"
            rates = _both_precisions(
                lambda p, m=model, s=sampling: generate(
                    m, SAMPLE_BATCH, sampling=dataclasses.replace(s, precision=p)
                ),
                SAMPLE_BATCH,
                1 if steps >= 1000 else repeats,
            )
            rows.append(
                {
                    "row": family,
                    "backend": "torch",
                    "sampling": how,
                    "nfe": model.num_network_evaluations(sampling),
                    **rates,
                }
            )
        if tiny:
            continue
        onnx_model = build_model(cfg.model, (1, 28, 28)).eval()
        use_onnx(onnx_model)
        for sampler, steps in sweep:
            if sampler == "ancestral":
                continue
            sampling = dataclasses.replace(cfg.sample, sampler=sampler, num_steps=steps)
            rate = _images_per_s(
                partial(generate, onnx_model, SAMPLE_BATCH, sampling=sampling), SAMPLE_BATCH
            )
            how = "one pass" if not onnx_model.sampling_fields else f"{sampler} {steps}"
            rows.append(
                {
                    "row": family,
                    "backend": "onnx",
                    "sampling": how,
                    "nfe": onnx_model.num_network_evaluations(sampling),
                    "fp32": {"median": rate},
                }
            )
    if not tiny:
        rows += _peer_and_zoo_rows(repeats)
    return rows


def _peer_and_zoo_rows(repeats: int) -> list[dict]:
    import dataclasses

    from peers import PEERS as PEER_CLASSES

    from fashiongen.checkpoint import load_model
    from fashiongen.export import use_onnx
    from fashiongen.generate import generate
    from fashiongen.zoo import available, zoo_path

    rows = []
    peer = PEER_CLASSES["diffusers-ddpm"](seed=0)
    for steps in (20, 50):
        rate = _images_per_s(
            partial(peer.sample, SAMPLE_BATCH, torch.Generator().manual_seed(0), num_steps=steps),
            SAMPLE_BATCH,
        )
        rows.append(
            {
                "row": "diffusers-ddpm (peer)",
                "backend": "torch",
                "sampling": f"DDIM {steps}",
                "nfe": steps,
                "fp32": {"median": rate},
            }
        )
    model, checkpoint = load_model(zoo_path("ddpm"))
    guided = dataclasses.replace(
        checkpoint.config.sample,
        num_steps=ZOO_GUIDED["num_steps"],
        guidance_scale=ZOO_GUIDED["guidance_scale"],
    )
    count = ZOO_GUIDED["num_samples"]
    rows.append(
        {
            "row": "zoo ddpm",
            "backend": "torch",
            "sampling": f"{guided.sampler} {guided.num_steps}, guidance "
            f"{guided.guidance_scale:g}, {count} images",
            "nfe": guided.num_steps,
            **_both_precisions(
                lambda p: generate(model, count, sampling=dataclasses.replace(guided, precision=p)),
                count,
                repeats,
            ),
        }
    )
    for name in sorted(available()):
        for backend in ("torch", "onnx"):
            started = time.perf_counter()
            model, checkpoint = load_model(zoo_path(name))
            if backend == "onnx":
                use_onnx(model)  # cached after the first time
            generate(model, SAMPLE_BATCH, sampling=checkpoint.config.sample)
            rows.append(
                {
                    "row": f"zoo {name}",
                    "backend": backend,
                    "sampling": "its own settings",
                    "nfe": None,
                    "seconds_for_64": round(time.perf_counter() - started, 2),
                }
            )
    return rows


# ---------------------------------------------------------------- the report


def _rate_cell(spread: dict) -> str:
    if "min" not in spread:
        return f"{spread['median']:.0f}"
    return f"{spread['median']:.0f} ({spread['min']:.0f}-{spread['max']:.0f})"


def markdown(result: dict) -> str:
    from fashiongen import precision

    roofs = result["roof_before"]
    train = {r["row"]: r for r in result["training"]}
    flags = precision.flag_names(result["cpu_flags"])
    roof_text = "; ".join(
        f"{p}: matmul {roofs[p]['matmul']:.0f} / {result['roof_after'][p]['matmul']:.0f}, "
        f"3x3 conv {roofs[p]['conv3x3']:.0f} / {result['roof_after'][p]['conv3x3']:.0f}, "
        f"channels_last {roofs[p]['conv3x3_channels_last']:.0f} / "
        f"{result['roof_after'][p]['conv3x3_channels_last']:.0f}"
        for p in PRECISIONS
    )
    lines = [
        f"Measured {result['date']} on {result['machine']} (flags: {flags}), "
        f"{result['threads']} threads, torch {result['torch']}. Roofs in the same run, GFLOP/s "
        f"(before / after): {roof_text}; % of roof below uses the precision's best "
        f"({roof_of(roofs, 'fp32'):.0f} fp32, {roof_of(roofs, 'bf16'):.0f} bf16). images/s: "
        f"median (min-max) of {result['repeats']} windows per precision, fp32 and bf16 in "
        f"turns. `auto`: what precision=auto would pick (bf16 only with bf16 units and "
        f">= {result['min_speedup']}x). Peak MiB is the whole training process's resident "
        f"peak (both precisions); a bare process with torch imported: "
        f"{result['training'][0]['bare_process_mib']:.0f} MiB.",
        "",
        "### Training (random data of Fashion-MNIST's shape, after warm-up)",
        "",
        "| row | parameters | batch | MFLOP / image | fp32 images/s | bf16 images/s | bf16 / fp32 "
        "| % of fp32 roof | % of bf16 roof | auto | peak MiB | vs peer (fp32) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["training"]:
        peer = OURS_ON_PEER.get(r["row"])
        fp32_rate = r["fp32"]["images_per_s"]["median"]
        ratio = (
            f"{fp32_rate / train[peer]['fp32']['images_per_s']['median']:.2f}x {peer}"
            if peer in train
            else ""
        )
        shares = [f"{100 * r[p]['gflops'] / roof_of(roofs, p):.0f}%" for p in PRECISIONS]
        lines.append(
            f"| {r['row']} | {r['parameters']:,} | {r['batch_size']} | "
            f"{r['mflop_per_image']:.1f} | {_rate_cell(r['fp32']['images_per_s'])} | "
            f"{_rate_cell(r['bf16']['images_per_s'])} | {r['bf16_speedup']:.2f}x | "
            f"{shares[0]} | {shares[1]} | {r['auto']} | {r['peak_mib']:.0f} | {ratio} |"
        )
    lines += _auto_cost_lines(result["auto_cost"])
    lines += [
        "",
        f"### Sampling ({SAMPLE_BATCH} images per call unless stated)",
        "",
        "| model | backend | sampling | network evaluations | fp32 images/s "
        "| bf16 images/s | bf16 / fp32 | auto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["sampling"]:
        if "fp32" in r:
            bf16 = (
                (_rate_cell(r["bf16"]), f"{r['bf16_speedup']:.2f}x", r["auto"])
                if "bf16" in r
                else ("", "", "")
            )
            lines.append(
                f"| {r['row']} | {r['backend']} | {r['sampling']} | {r['nfe']} | "
                f"{_rate_cell(r['fp32'])} | {' | '.join(bf16)} |"
            )
    lines += [
        "",
        "### 64 images from each zoo model (load + sample, as `fashiongen sample "
        "--model NAME` does)",
        "",
        "| zoo model | backend | seconds |",
        "|---|---|---|",
    ]
    for r in result["sampling"]:
        if "seconds_for_64" in r:
            lines.append(f"| {r['row'][4:]} | {r['backend']} | {r['seconds_for_64']:.2f} |")
    return "\n".join(lines) + "\n"


def _auto_cost_lines(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "### What `auto` costs without bf16 units (simulated: "
        "FASHIONGEN_PRECISION_SIMULATE=no-bf16-units)",
        "",
        f"precision=fp32 and precision=auto in turns, {rows[0]['pairs']} pairs of windows "
        "per row; training: a decision and a step per call (a run decides once), "
        f"sampling: {SAMPLE_BATCH} images per `generate` call (each decides). Cost: 1 - "
        "auto's best window / fp32's best (negative: auto's was faster, i.e. noise); "
        "the pairs' ratios show the machine's noise.",
        "",
        "| family | phase | auto picks | fp32 images/s | auto images/s | pairs' auto / "
        "fp32: median (min-max) | cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["auto_over_fp32"]
        lines.append(
            f"| {r['row']} | {r['phase']} | {r['auto_choice']} | "
            f"{_rate_cell(r['fp32'])} | {_rate_cell(r['auto'])} | "
            f"{ratio['median']:.4f} ({ratio['min']:.4f}-{ratio['max']:.4f}) | "
            f"{r['cost_percent']:+.2f}% |"
        )
    return lines


def write_readme_section(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + table + rest[rest.index(end) :], encoding="utf-8")


def main() -> None:
    from fashiongen import precision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="timing window per precision per repeat, training rows",
    )
    parser.add_argument("--repeats", type=int, default=3, help="windows per precision")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a quick check that the script runs: the families only, short "
        "windows, one sampler setting; README untouched",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--row", help=argparse.SUPPRESS)  # one training row, in a subprocess
    args = parser.parse_args()
    if args.tiny:
        args.seconds, args.repeats = min(args.seconds, 0.3), 1
    if args.row == AUTO_COST_ROW:
        print(json.dumps(auto_cost_rows(args.seconds, args.repeats)))
        return
    if args.row:
        print(json.dumps(training_row(args.row, args.seconds, args.repeats)))
        return
    roof_seconds = 0.5 if args.tiny else 2.0
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or 'x86_64'}, {precision.cpu_model() or 'unknown CPU'}",
        "cpu_flags": precision.cpu_flags(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "min_speedup": precision.MIN_SPEEDUP,
        "roof_before": roof(roof_seconds),
        "training": [],
    }
    print("roof", result["roof_before"], flush=True)
    for row in FAMILIES if args.tiny else [*FAMILIES, *PEERS, *OURS_ON_PEER]:
        result["training"].append(_row_process(row, args))
        print(result["training"][-1], flush=True)
    result["auto_cost"] = _row_process(
        AUTO_COST_ROW, args, {precision.SIMULATE_ENV: "no-bf16-units"}
    )
    print("auto cost", result["auto_cost"], flush=True)
    result["sampling"] = sampling_rows(repeats=args.repeats, tiny=args.tiny)
    result["roof_after"] = roof(roof_seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "throughput.md").write_text(table)
    if not args.tiny:
        write_readme_section(HERE / "README.md", table)
    print(table)


def _row_process(row: str, args: argparse.Namespace, env: dict[str, str] | None = None):
    """`--row ROW` in its own process (its own peak memory, its own environment)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--row",
            row,
            "--seconds",
            str(args.seconds),
            "--repeats",
            str(args.repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
