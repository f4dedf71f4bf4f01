"""How much work one request may ask for: the one table of bounds the CLI, the config and the
web page share (docs/errors.md lists it).

A request beyond a bound is refused before any work starts, with the bound in the message.
The images a command keeps in memory (uint8, N x C x H x W bytes) are bounded in bytes, so a
count that cannot fit is refused rather than ending in an allocation failure; a folder of
PNGs is written batch by batch and bounded by count only.
"""

from __future__ import annotations

import math

from fashiongen.errors import ConfigError

MAX_NUM_SAMPLES = 10_000_000  # images one command draws (`--num-samples`)
MAX_IMAGE_BYTES = 2 * 1024**3  # uint8 images one command holds in memory at once
MAX_GRID_IMAGES = 10_000  # tiles of one grid PNG (a 100 x 100 grid)
MAX_EVAL_SAMPLES = 50_000  # samples scored at once (eval, compare, train.eval_num_samples)
MAX_SAMPLING_STEPS = 1000  # diffusion sampling steps (sample.num_steps, --steps, the page)
MAX_GUIDANCE_SCALE = 50  # classifier-free guidance (sample.guidance_scale, the page's slider)
MAX_BATCH_SIZE = 65_536  # train.batch_size
MAX_TRAIN_GRID_SAMPLES = 256  # train.num_grid_samples
MAX_WEB_IMAGES = 64  # images in one grid on the web page
MAX_WEB_FRAMES = 16  # frames of one interpolation strip on the web page

# name: (bound, what it bounds); docs/errors.md shows this table and a test compares them.
LIMITS: dict[str, tuple[int, str]] = {
    "MAX_NUM_SAMPLES": (MAX_NUM_SAMPLES, "`--num-samples` of sample and synth"),
    "MAX_IMAGE_BYTES": (
        MAX_IMAGE_BYTES,
        "bytes of images held in memory: sample to a grid or .npz, synth, eval, compare",
    ),
    "MAX_GRID_IMAGES": (MAX_GRID_IMAGES, "images in one grid PNG (`sample --out x.png`)"),
    "MAX_EVAL_SAMPLES": (
        MAX_EVAL_SAMPLES,
        "`--num-samples` of eval and compare, `train.eval_num_samples`",
    ),
    "MAX_SAMPLING_STEPS": (
        MAX_SAMPLING_STEPS,
        "diffusion steps: `sample --steps`, `sample.num_steps`, the page's slider",
    ),
    "MAX_GUIDANCE_SCALE": (
        MAX_GUIDANCE_SCALE,
        "`sample --guidance-scale`, `sample.guidance_scale`, the page's slider",
    ),
    "MAX_BATCH_SIZE": (MAX_BATCH_SIZE, "`train.batch_size`"),
    "MAX_TRAIN_GRID_SAMPLES": (MAX_TRAIN_GRID_SAMPLES, "`train.num_grid_samples`"),
    "MAX_WEB_IMAGES": (MAX_WEB_IMAGES, "images per grid on the web page"),
    "MAX_WEB_FRAMES": (MAX_WEB_FRAMES, "frames per interpolation on the web page"),
}


def check_images_fit(num_images: int, image_shape: tuple[int, ...], *, hint: str = "") -> None:
    """Refuse `num_images` uint8 images of `image_shape` (C, H, W) that would need more than
    MAX_IMAGE_BYTES of memory; `hint` says what to do instead."""
    per_image = math.prod(image_shape)
    if num_images * per_image <= MAX_IMAGE_BYTES:
        return
    shape = "x".join(map(str, image_shape))
    raise ConfigError(
        f"{num_images} images of {shape} need {_gib(num_images * per_image)} of "
        f"memory, more than the {_gib(MAX_IMAGE_BYTES)} one command may hold: "
        f"ask for at most {MAX_IMAGE_BYTES // per_image}{hint}"
    )


def check_count(
    name: str, value: int, bound: int, *, what: str = "the limit", hint: str = ""
) -> None:
    """Refuse a count above `bound`, naming it, `what` the bound is and `hint`."""
    if value > bound:
        raise ConfigError(f"{name} is {value}, more than {what} ({bound}){hint}")


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 1024**3:.3g} GiB"
