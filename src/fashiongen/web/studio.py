"""The web studio's logic, free of any web framework: which models, bounded requests, grids.

`Studio` maps model keys (a zoo name, or a checkpoint path given on the command line) to
checkpoints, loads each model once (thread-safe) and answers two requests: `generate_grid`
(a grid PNG plus the same images as an npz) and `interpolate` (a strip between two seeds).
Every input is checked here, on the server, whatever the page allowed; a refusal is a
`ConfigError` with a one-line message the page shows. The Gradio page (`web/app.py`) is a
thin layer over this module, so everything here is tested without a browser.

Interpolation goes through every family's latents (`latent_shape`,
`generate_from_latents`, the sampling side of `fashiongen.models.base`), with spherical
interpolation (White, "Sampling Generative Networks", arXiv 1609.04468).
"""

from __future__ import annotations

import dataclasses
import io
import math
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from fashiongen import limits
from fashiongen.checkpoint import Checkpoint, load_model, weights_path
from fashiongen.config import SampleConfig
from fashiongen.errors import ConfigError
from fashiongen.generate import generate_labelled
from fashiongen.generate import interpolate as interpolate_latents
from fashiongen.images import make_grid, to_pil
from fashiongen.models.base import DraftRefiner, Family
from fashiongen.samplers import SAMPLERS
from fashiongen.samples import class_labels, class_names_of, parse_classes, save_samples
from fashiongen.zoo import available, fast_version

MAX_IMAGES = limits.MAX_WEB_IMAGES
MAX_STEPS = limits.MAX_SAMPLING_STEPS
MAX_FRAMES = limits.MAX_WEB_FRAMES
MAX_SEED = 2**53 - 1  # the largest integer a browser's (JSON) number holds exactly
ANY_CLASS = "any"
GRID_SCALE = 2  # as `fashiongen.images.save_grid`, so a downloaded grid equals `sample --out`

Progress = Callable[[int, int], None]  # (steps done, steps in all)


def zoo_models() -> dict[str, Path]:
    """The shipped model zoo, name -> checkpoint path, the fast DDPM first (the page's
    default model: a few network calls an image); empty while no zoo is installed."""
    models = {name: Path(path) for name, path in available().items()}
    first = fast_version("ddpm")
    return {**({first: models[first]} if first else {}), **models}


@dataclass(frozen=True)
class ModelInfo:
    """What the page needs to know to show the right controls for one model."""

    key: str
    family: str
    step: int
    image_shape: tuple[int, int, int]
    class_names: list[str]  # empty for an unconditional model
    uses_sampler: bool  # runs a diffusion sampler: sampler, steps and guidance matter
    uses_strength: bool  # noises a draft before refining it (the hybrid): strength matters
    uses_guide: bool  # holds an autoguidance guide: the guide scale matters
    sampling: SampleConfig  # the checkpoint's own sampling defaults


class Grid(NamedTuple):
    """A generated grid: the picture, and the images as npz bytes (`images`, `labels`,
    `class_names`, as `fashiongen sample --out x.npz` writes them)."""

    image: Image.Image
    npz: bytes


class Strip(NamedTuple):
    """An interpolation strip, one row of frames, and a line saying how it was made."""

    image: Image.Image
    note: str


def grid_size(
    num_images: int,
    image_shape: tuple[int, int, int],
    *,
    num_rows: int | None = None,
    padding: int = 2,
    scale: int = GRID_SCALE,
) -> tuple[int, int]:
    """(width, height) in pixels of the grid `make_grid` + `to_pil` draw for `num_images`."""
    _, h, w = image_shape
    rows = num_rows or max(1, math.isqrt(num_images))
    cols = math.ceil(num_images / rows)
    return ((cols * (w + padding) + padding) * scale, (rows * (h + padding) + padding) * scale)


def bounded_int(name: str, value: float | int | None, low: int, high: int) -> int:
    """`value` as an int in [low, high], or a ConfigError naming `name` and the bounds."""
    if value is None or isinstance(value, bool):
        raise ConfigError(f"{name} is required (a whole number from {low} to {high})")
    if not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        value = int(value)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


class Studio:
    """Model keys -> checkpoints; loads each model once and answers bounded requests."""

    def __init__(self, checkpoints: Mapping[str, str | Path], *, device: str = "cpu") -> None:
        if not checkpoints:
            raise ConfigError(
                "no models to serve: give a checkpoint or run folder, e.g. "
                "`fashiongen serve runs/demo`"
            )
        self.checkpoints = {key: Path(path) for key, path in checkpoints.items()}
        self.device = device
        self._loaded: dict[str, tuple[Family, Checkpoint]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_sources(cls, paths: Sequence[str | Path] = (), *, use_zoo: bool = True) -> Studio:
        """The checkpoints or run folders in `paths` (keyed by the path as given, each
        checked to hold a checkpoint), then the zoo's models when a zoo is installed."""
        checkpoints: dict[str, Path] = {}
        for path in paths:
            weights_path(path)  # fail now, with the path named, not at the first request
            checkpoints[str(path)] = Path(path)
        for name, path in (zoo_models() if use_zoo else {}).items():
            checkpoints.setdefault(name, path)
        return cls(checkpoints)

    @property
    def keys(self) -> list[str]:
        return list(self.checkpoints)

    def load(self, key: str) -> tuple[Family, Checkpoint]:
        """The model and checkpoint for `key`, loaded on first use and kept."""
        if key not in self.checkpoints:
            raise ConfigError(f"unknown model {key!r}; choose from: {', '.join(self.keys)}")
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load_model(self.checkpoints[key], device=self.device)
            return self._loaded[key]

    def info(self, key: str) -> ModelInfo:
        model, checkpoint = self.load(key)
        return ModelInfo(
            key=key,
            family=checkpoint.config.model.name,
            step=checkpoint.step,
            image_shape=tuple(model.image_shape),
            class_names=class_names_of(checkpoint) if model.num_classes else [],
            uses_sampler="sampler" in model.sampling_fields,
            uses_strength=isinstance(model, DraftRefiner),
            uses_guide=getattr(model, "guide", None) is not None,
            sampling=checkpoint.config.sample,
        )

    # ------------------------------------------------------------------ requests

    def generate_grid(
        self,
        model_key: str,
        class_name: str | None,
        seed: int,
        num_images: int,
        sampler: str,
        steps: int,
        guidance: float,
        strength: float,
        guide_scale: float | None = None,
        *,
        progress: Progress | None = None,
    ) -> Grid:
        """Draw `num_images` images (reproducible from `seed`, as `fashiongen sample`) and
        return them as a grid picture and as npz bytes.

        `class_name` is a class name or id, or "any"/None for classes drawn at random; the
        sampling arguments matter only to families that use them (see `ModelInfo`);
        `guide_scale` None keeps the checkpoint's autoguidance scale.
        `progress(done, total)` is called as diffusion sampling advances.
        """
        num_images = bounded_int("number of images", num_images, 1, MAX_IMAGES)
        seed = bounded_int("seed", seed, 0, MAX_SEED)
        model, checkpoint = self.load(model_key)
        sampling = self._sampling(checkpoint, sampler, steps, guidance, strength, guide_scale)
        class_names = class_names_of(checkpoint)
        labels = self._labels(model, class_name, class_names, num_images)
        callback = None if progress is None else (lambda i, n: progress(i + 1, n))
        images, labels = generate_labelled(
            model, num_images, labels=labels, seed=seed, sampling=sampling, callback=callback
        )
        picture = to_pil(make_grid(images), GRID_SCALE)
        return Grid(picture, _npz_bytes(images, labels, class_names if model.num_classes else None))

    def interpolate(
        self,
        model_key: str,
        class_name: str | None,
        seed_a: int,
        seed_b: int,
        num_frames: int,
        sampler: str,
        steps: int,
        guidance: float,
        strength: float,
        guide_scale: float | None = None,
        *,
        progress: Progress | None = None,
    ) -> Strip:
        """A strip of `num_frames` images going from seed A's sample to seed B's.

        Through the latents (slerp), the ends being the latents `sample` draws from each
        seed. A conditional model keeps one class along the strip: `class_name`, or seed A's
        random class. With a chosen class (and a
        deterministic sampler), the end frames equal the one-image grids of seeds A and B.
        """
        num_frames = bounded_int("number of frames", num_frames, 2, MAX_FRAMES)
        seed_a = bounded_int("seed A", seed_a, 0, MAX_SEED)
        seed_b = bounded_int("seed B", seed_b, 0, MAX_SEED)
        model, checkpoint = self.load(model_key)
        sampling = self._sampling(checkpoint, sampler, steps, guidance, strength, guide_scale)
        label = self._labels(model, class_name, class_names_of(checkpoint), 1)
        if label is None and model.num_classes:
            label = torch.randint(
                model.num_classes, (1,), generator=torch.Generator().manual_seed(seed_a)
            )
        callback = None if progress is None else (lambda i, n: progress(i + 1, n))
        images = interpolate_latents(
            model,
            seed_a=seed_a,
            seed_b=seed_b,
            num_frames=num_frames,
            label=None if label is None else int(label[0]),
            sampling=sampling,
            callback=callback,
        )
        note = (
            f"Spherical interpolation between the latents of seed {seed_a} and seed "
            f"{seed_b}, {num_frames} frames."
        )
        return Strip(to_pil(make_grid(images, num_rows=1), GRID_SCALE), note)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _sampling(
        checkpoint: Checkpoint,
        sampler: str,
        steps: int,
        guidance: float,
        strength: float,
        guide_scale: float | None = None,
    ) -> SampleConfig:
        """The checkpoint's sampling config with the request's values (a guide scale of None:
        the checkpoint's); bounds checked."""
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose from: {', '.join(SAMPLERS)}")
        steps = bounded_int("sampling steps", steps, 1, MAX_STEPS)
        if guide_scale is None:
            guide_scale = checkpoint.config.sample.guide_scale
        numbers = (
            ("guidance scale", guidance),
            ("strength", strength),
            ("guide scale", guide_scale),
        )
        for name, value in numbers:
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        # SampleConfig checks the remaining bounds and names the field it refuses.
        return dataclasses.replace(
            checkpoint.config.sample,
            sampler=sampler,
            num_steps=steps,
            guidance_scale=float(guidance),
            strength=float(strength),
            guide_scale=float(guide_scale),
        )

    @staticmethod
    def _labels(
        model: Family, class_name: str | None, class_names: list[str], num_images: int
    ) -> torch.Tensor | None:
        """`num_images` copies of the requested class, or None for random classes."""
        if class_name is None or class_name.strip().lower() in ("", ANY_CLASS):
            return None
        if not model.num_classes:
            raise ConfigError("this model is unconditional: choose class 'any'")
        (class_id,) = parse_classes([class_name], class_names)
        return class_labels([class_id], num_images)


def _npz_bytes(
    images: torch.Tensor, labels: torch.Tensor | None, class_names: list[str] | None
) -> bytes:
    """The npz `save_samples` writes, as bytes (one format, written in one place)."""
    with tempfile.TemporaryDirectory(prefix="fashiongen-web-") as folder:
        path = save_samples(Path(folder) / "samples.npz", images, labels, class_names=class_names)
        return path.read_bytes()


def png_bytes(image: Image.Image) -> bytes:
    """A PIL image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
