"""Design studio: refine, inpaint and class transfer on degraded test images, zoo DDPM.

    OMP_NUM_THREADS=2 python benchmarks/design_studio.py --out docs/results/design_studio
    python benchmarks/design_studio.py --num-images 200 --out /tmp/ds   # while tuning

N test images (N/10 per class, the first of each in file order) are degraded three ways:
a heavy Gaussian blur (radius 1.6, as issue 20 measured), Gaussian noise (sd 0.5 in [-1, 1],
64 grey levels) and a cut-out 10x10 hole (black) at the centre. Each row gives the FID
against the test split and the share the featnet classifies as the requested class
(`fashiongen.metrics.evaluate`), and the silhouette IoU with the original (pixels above
40 of 255; a random other image of the same class scores about 0.62). Rows: the originals and
the degraded inputs, plain SDEdit (no guidance) and the eighth session's Landweber guidance on
DPM-Solver++, `fashiongen.editing.refine` at 3 strengths (the default guidance: DDNM),
`inpaint` at 3 strengths for the hole (the unmasked pixels compared bit for bit), and class
transfer: each image refined towards another class, the share classified as that class and
the silhouette IoU with the input. Time per refined 28x28 image is batch 1, the default
setting, median of 20. Writes OUT/design_studio.json, OUT/README.md and
OUT/before_after.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from fashiongen import editing
from fashiongen.checkpoint import load_model
from fashiongen.config import SampleConfig
from fashiongen.data import load_dataset
from fashiongen.images import make_grid, to_model_range, to_pil, to_uint8
from fashiongen.metrics import evaluate
from fashiongen.zoo import zoo_path

BLUR_RADIUS = 1.6
NOISE_SD = 0.5
HOLE_SIZE = 10
SILHOUETTE_THRESHOLD = 40
STRENGTHS = tuple(sorted({0.6, editing.DEFAULT_STRENGTH, 1.0}))  # the default among them
TIMING_RUNS = 5  # refines per input and round, after one warm-up
TIMING_ROUNDS = 3  # the inputs in turns, so a noisy machine spreads over all of them
SETS = ("blur", "noise", "hole", "transfer")
SEED = 0
PICTURE_COLUMNS = 8


def blur(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) blurred by Pillow's Gaussian of radius BLUR_RADIUS."""
    blurred = [
        np.asarray(Image.fromarray(x[0].numpy()).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
        for x in images
    ]
    return torch.from_numpy(np.stack(blurred))[:, None]


def add_noise(images: torch.Tensor) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(SEED))
    return to_uint8(to_model_range(images) + NOISE_SD * noise)


def hole_mask(images: torch.Tensor) -> torch.Tensor:
    """bool (N, 1, H, W), True in the centred HOLE_SIZE square."""
    mask = torch.zeros(images.shape, dtype=torch.bool)
    h, w = images.shape[-2:]
    top, left = (h - HOLE_SIZE) // 2, (w - HOLE_SIZE) // 2
    mask[..., top : top + HOLE_SIZE, left : left + HOLE_SIZE] = True
    return mask


def silhouette_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean IoU of the thresholded masks of two uint8 (N, 1, H, W) sets."""
    a, b = a > SILHOUETTE_THRESHOLD, b > SILHOUETTE_THRESHOLD
    union = (a | b).flatten(1).sum(1).clamp(min=1)
    return float(((a & b).flatten(1).sum(1) / union).mean())


def score(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    silhouettes: torch.Tensor,
    seconds: float | None = None,
    **extra,
) -> dict:
    metrics = evaluate(images, labels=labels, use_memorisation=False, seed=SEED)
    row = {
        "row": name,
        "fid": metrics["fid"],
        "class_share": metrics["conditional_accuracy"],
        "silhouette_iou": silhouette_iou(images, silhouettes),
        **extra,
    }
    if seconds is not None:
        row["ms_per_image"] = 1000 * seconds / len(images)
    print(json.dumps(row), flush=True)
    return row


def timed(fn, *args, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return to_uint8(out), time.perf_counter() - start


# The eighth session's default, for comparison: 5 Landweber steps towards median3(y) read as
# blurred by 2.5 pixels while t > 0.5 T, on DPM-Solver++ at 20 steps
LANDWEBER_GUIDANCE = editing.Guidance(form="deblur", sigma=2.5, stop=0.5)
LANDWEBER_SAMPLING = SampleConfig(
    sampler="dpmpp_2m", num_steps=20, guidance_scale=1.5, guide_scale=2.0
)


def refine_rows(
    model,
    name: str,
    degraded: torch.Tensor,
    originals: torch.Tensor,
    labels: torch.Tensor,
    strengths: tuple[float, ...] = STRENGTHS,
    use_baselines: bool = True,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The degraded input, plain SDEdit and the Landweber guidance at the default strength,
    then refine at `strengths`."""
    x = to_model_range(degraded)
    rows = [score(f"{name}: degraded input", degraded, labels, originals)]
    outputs = {}
    baselines = (
        ("plain SDEdit", None, LANDWEBER_SAMPLING),
        ("Landweber deblur (eighth session's default)", LANDWEBER_GUIDANCE, LANDWEBER_SAMPLING),
    )
    if not use_baselines:
        baselines = ()
    for row, guidance, sampling in baselines:
        out, seconds = timed(
            editing.refine,
            model,
            x,
            editing.DEFAULT_STRENGTH,
            labels=labels,
            guidance=guidance,
            sampling=sampling,
            generator=torch.Generator().manual_seed(SEED),
        )
        rows.append(
            score(f"{name}: {row} {editing.DEFAULT_STRENGTH}", out, labels, originals, seconds)
        )
    for strength in strengths:
        out, seconds = timed(
            editing.refine,
            model,
            x,
            strength,
            labels=labels,
            generator=torch.Generator().manual_seed(SEED),
        )
        rows.append(score(f"{name}: refine {strength}", out, labels, originals, seconds))
        outputs[f"refine {strength}"] = out
    return rows, outputs


def inpaint_rows(
    model, originals: torch.Tensor, labels: torch.Tensor, strengths: tuple[float, ...]
) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    mask = hole_mask(originals)
    holed = originals.masked_fill(mask, 0)
    x = to_model_range(holed)
    rows = [score("hole: degraded input", holed, labels, originals)]
    for strength in strengths:
        out, seconds = timed(
            editing.inpaint,
            model,
            x,
            mask,
            labels=labels,
            strength=strength,
            generator=torch.Generator().manual_seed(SEED),
        )
        kept = bool(torch.equal(out[~mask], holed[~mask]))
        rows.append(
            score(
                f"hole: inpaint {strength}",
                out,
                labels,
                originals,
                seconds,
                unmasked_identical=kept,
            )
        )
    return rows, holed, out


def transfer_rows(
    model, originals: torch.Tensor, labels: torch.Tensor
) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Each image refined towards a random other class at the default strength."""
    shift = torch.randint(1, 10, labels.shape, generator=torch.Generator().manual_seed(SEED))
    targets = (labels + shift) % 10
    x = to_model_range(originals)
    out, seconds = timed(
        editing.refine,
        model,
        x,
        editing.DEFAULT_STRENGTH,
        labels=targets,
        guidance=editing.TRANSFER_GUIDANCE,
        sampling=editing.TRANSFER_SAMPLING,
        generator=torch.Generator().manual_seed(SEED),
    )
    row = score(f"class transfer {editing.DEFAULT_STRENGTH}", out, targets, originals, seconds)
    return [row], targets, out


def seconds_per_image(
    model, inputs: dict[str, torch.Tensor], label: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Seconds of one default refine of each of `inputs` (name: one uint8 image, batch 1),
    the inputs interleaved over rounds: {name: median, min, max}."""
    runs: dict[str, list[float]] = {name: [] for name in inputs}
    for _ in range(TIMING_ROUNDS):
        for name, image in inputs.items():
            x = to_model_range(image)
            for i in range(TIMING_RUNS + 1):
                start = time.perf_counter()
                editing.refine(model, x, labels=label, generator=torch.Generator().manual_seed(i))
                if i:  # the first run of a round warms up
                    runs[name].append(time.perf_counter() - start)
    return {
        name: {"median": statistics.median(r), "min": min(r), "max": max(r)}
        for name, r in runs.items()
    }


def picture(path: Path, columns: list[torch.Tensor]) -> None:
    """One row per example: the given image sets side by side (PNG, 3x)."""
    rows = torch.stack([c[:PICTURE_COLUMNS] for c in columns], dim=1).flatten(0, 1)
    to_pil(make_grid(rows, num_rows=PICTURE_COLUMNS), 3).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="default: all")
    parser.add_argument(
        "--strengths",
        nargs="+",
        type=float,
        default=None,
        help=f"refine's and inpaint's strengths (default {', '.join(map(str, STRENGTHS))})",
    )
    parser.add_argument(
        "--timing-only", action="store_true", help="only time one refine of each input kind"
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="leave out the plain SDEdit and Landweber rows",
    )
    args = parser.parse_args(argv)
    model, _ = load_model(zoo_path("ddpm"))
    test = load_dataset("fashion-mnist", "test")
    per_class = args.num_images // 10
    index = torch.cat([torch.nonzero(test.labels == c).flatten()[:per_class] for c in range(10)])
    originals, labels = test.images[index], test.labels[index]
    strengths = tuple(args.strengths or STRENGTHS)
    blurred, noisy = blur(originals), add_noise(originals)
    seconds = seconds_per_image(
        model, {"blurred": blurred[:1], "noisy": noisy[:1], "undamaged": originals[:1]}, labels[:1]
    )
    if args.timing_only:
        args.out.mkdir(parents=True, exist_ok=True)
        timing = {"threads": torch.get_num_threads(), "seconds_per_image": seconds}
        (args.out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
        print(json.dumps(timing))
        return 0
    rows = [score("originals", originals, labels, originals)]
    pictures = [originals, blurred]
    if "blur" in args.sets:
        blur_rows, blur_out = refine_rows(
            model, "blur", blurred, originals, labels, strengths, not args.no_baselines
        )
        rows += blur_rows
        pictures.append(blur_out[f"refine {strengths[len(strengths) // 2]}"])
    if "noise" in args.sets:
        rows += refine_rows(
            model, "noise", noisy, originals, labels, strengths, not args.no_baselines
        )[0]
    if "hole" in args.sets:
        hole_rows, holed, filled = inpaint_rows(model, originals, labels, strengths)
        rows += hole_rows
        pictures += [holed, filled]
    if "transfer" in args.sets:
        transfer, targets, moved = transfer_rows(model, originals, labels)
        rows += transfer
        pictures.append(moved)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join(["python", "benchmarks/design_studio.py", *sys.argv[1:]]),
        "num_images": len(originals),
        "sets": args.sets,
        "threads": torch.get_num_threads(),
        "default": {
            "strength": editing.DEFAULT_STRENGTH,
            "guidance": vars(editing.Guidance()),
            "transfer_guidance": editing.TRANSFER_GUIDANCE,
            "transfer_sampling": vars(editing.TRANSFER_SAMPLING),
            "sampling": vars(editing.DEFAULT_EDIT_SAMPLING),
        },
        "seconds_per_image": seconds,
        "rows": rows,
    }
    (args.out / "design_studio.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "README.md").write_text(markdown(result))
    spread = torch.arange(PICTURE_COLUMNS) * (len(originals) // PICTURE_COLUMNS)
    picture(args.out / "before_after.png", [s[spread] for s in pictures])
    print(f"{seconds['blurred']['median'] * 1000:.0f} ms per blurred image; wrote {args.out}")
    return 0


def markdown(result: dict) -> str:
    per_image = ", ".join(
        f"{name} {1000 * times['median']:.0f} ({1000 * times['min']:.0f}-{1000 * times['max']:.0f})"
        for name, times in result["seconds_per_image"].items()
    )
    lines = [
        f"# Design studio benchmark\n\n`{result['command']}`  \n"
        f"{result['num_images']} test images, {result['threads']} threads; default "
        f"setting {json.dumps(result['default'])}; one refined image (batch 1, median "
        f"ms): {per_image}.\n",
        "| row | FID | class share | silhouette IoU | ms / image | unmasked identical |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        ms = f"{row['ms_per_image']:.0f}" if "ms_per_image" in row else ""
        kept = {True: "yes", False: "NO"}.get(row.get("unmasked_identical"), "")
        lines.append(
            f"| {row['row']} | {row['fid']:.3f} | {row['class_share']:.3f} | "
            f"{row['silhouette_iou']:.3f} | {ms} | {kept} |"
        )
    columns = {
        "blur": ["refined"],
        "hole": ["holed", "inpainted"],
        "transfer": ["moved to another class"],
    }
    shown = ["original", "blurred", *(c for s in result["sets"] for c in columns.get(s, []))]
    lines.append(f"\nColumns of before_after.png: {', '.join(shown)}.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
