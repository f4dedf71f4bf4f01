"""Quality of bf16 sampling (issue 19): FID of N samples drawn in bf16 against N drawn in fp32
from the same checkpoint with the same seed and labels; the target is within 3%.

    python benchmarks/bf16_quality.py --model ddpm --num-samples 2000 \
        --out docs/results/bf16_quality.json     (the zoo DDPM's own sampling; ~8 minutes)

Each precision's samples are written to an .npz in a temporary folder and scored by
`fashiongen.evaluation.evaluate_source` against the test split (its featnet, FID and KID;
memorisation off), so the numbers are those `fashiongen eval` gives. The sampling seconds of
each precision are recorded too (one run each), and then `--timing-pairs` interleaved timings of
`--timing-images` images in each precision (A B A B; the speedup of the medians), the number
to quote for speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fashiongen import precision
from fashiongen.checkpoint import load_model, model_source
from fashiongen.evaluation import evaluate_source
from fashiongen.generate import generate
from fashiongen.samples import balanced_labels, save_samples

FID_TOLERANCE = 0.03  # the target: bf16's FID within 3% of fp32's


def compare(
    source: str,
    *,
    num_samples: int,
    seed: int,
    steps: int | None,
    guidance_scale: float | None,
    timing_images: int = 1000,
    timing_pairs: int = 0,
) -> dict:
    """FID, KID and sampling seconds of fp32 and bf16 samples of one checkpoint."""
    model, checkpoint = load_model(model_source(source))
    changes = {
        k: v for k, v in (("num_steps", steps), ("guidance_scale", guidance_scale)) if v is not None
    }
    sampling = dataclasses.replace(checkpoint.config.sample, **changes)
    labels = balanced_labels(num_samples, model.num_classes)
    result = {
        "source": source,
        "num_samples": num_samples,
        "seed": seed,
        "sampling": dataclasses.asdict(sampling),
        "machine": precision.cpu_model(),
        "cpu_flags": precision.cpu_flags(),
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for choice in ("fp32", "bf16"):
            started = time.perf_counter()
            images = generate(
                model,
                num_samples,
                labels=labels,
                seed=seed,
                sampling=dataclasses.replace(sampling, precision=choice),
            )
            seconds = time.perf_counter() - started
            npz = save_samples(Path(tmp) / f"{choice}.npz", images, labels)
            scores = evaluate_source(
                npz, dataset=checkpoint.metadata.get("dataset"), use_memorisation=False
            )
            result[choice] = {
                "fid": scores["fid"],
                "kid_mean": scores.get("kid_mean"),
                "sampling_seconds": round(seconds, 2),
            }
    fp32_fid, bf16_fid = result["fp32"]["fid"], result["bf16"]["fid"]
    result["fid_ratio"] = round(bf16_fid / fp32_fid, 4)
    result["within_target"] = abs(bf16_fid - fp32_fid) <= FID_TOLERANCE * fp32_fid
    result["sampling_speedup"] = round(
        result["fp32"]["sampling_seconds"] / result["bf16"]["sampling_seconds"], 2
    )
    if timing_pairs:
        result["timing"] = interleaved_timing(model, sampling, timing_images, timing_pairs)
    return result


def interleaved_timing(model, sampling, num_images: int, pairs: int) -> dict:
    """Seconds for `num_images` (balanced labels) in fp32 and bf16, in turns A B A B, so the
    machine's load hits both; the speedup is the ratio of the medians."""
    labels = balanced_labels(num_images, model.num_classes)
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(pairs):
        for choice, times in seconds.items():
            started = time.perf_counter()
            generate(
                model,
                num_images,
                labels=labels,
                sampling=dataclasses.replace(sampling, precision=choice),
            )
            times.append(round(time.perf_counter() - started, 2))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "num_images": num_images,
        "seconds": seconds,
        "speedup_of_medians": round(median["fp32"] / median["bf16"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm", help="a zoo name, run folder or checkpoint")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="sampling steps (default: the checkpoint's)")
    parser.add_argument("--guidance-scale", type=float, help="default: the checkpoint's")
    parser.add_argument("--out", type=Path, help="also write the result as JSON")
    parser.add_argument(
        "--timing-pairs", type=int, default=2, help="interleaved fp32/bf16 timings (0: none)"
    )
    parser.add_argument("--timing-images", type=int, default=1000)
    args = parser.parse_args()
    result = compare(
        args.model,
        num_samples=args.num_samples,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        timing_images=args.timing_images,
        timing_pairs=args.timing_pairs,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
