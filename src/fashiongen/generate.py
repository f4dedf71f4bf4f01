"""Sampling from a trained model: batches, whole sets, interpolations, and `sample_to` a file.

`iter_generate` draws reproducibly from one seed batch by batch; `sample_to` writes the
images in the form `fashiongen.samples` defines (grid PNG, npz or PNG folder), a folder
batch by batch, so its size is bounded by disk, not memory (`fashiongen.limits`). Each
output appears whole or not at all, and an existing one is replaced only when asked.

Used by the CLI, the web page, the notebook and `fashiongen.evaluation`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from fashiongen import limits
from fashiongen.checkpoint import Checkpoint, own_sampling
from fashiongen.config import SampleConfig
from fashiongen.errors import ConfigError
from fashiongen.files import check_free
from fashiongen.images import to_uint8
from fashiongen.models.base import Callback, Family, eval_mode
from fashiongen.samples import class_names_of, output_form, save_samples, write_png_folder

MAX_BATCH = 256


def check_same_classes(a: Checkpoint, b: Checkpoint) -> None:
    """Refuse to combine models of different datasets or classes (a shirt refined by a digit
    model): one line naming both."""
    datasets = [json.loads(c.metadata.get("extra", "{}")).get("dataset") for c in (a, b)]
    if None not in datasets and datasets[0] != datasets[1]:
        raise ConfigError(
            f"{a.path} was trained on {datasets[0]} but {b.path} on "
            f"{datasets[1]}: combine models of one dataset"
        )
    names = [class_names_of(c) for c in (a, b)]
    if names[0] != names[1]:
        raise ConfigError(
            f"{a.path} and {b.path} have different classes "
            f"({', '.join(names[0]) or 'none'} vs {', '.join(names[1]) or 'none'})"
        )


def check_can_sample(model: Family, sampling: SampleConfig, *, what: str) -> None:
    """Draw one image as `fashiongen sample` will with these settings, so that a model whose
    own settings cannot sample is refused before it is written, not when it is read."""
    try:
        with eval_mode(model):
            model.sample(1, generator=torch.Generator().manual_seed(0), sampling=sampling)
    except (ConfigError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{what} would not sample with its own settings: {e}") from None


@torch.no_grad()
def iter_generate(
    model: Family,
    num_samples: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    sampling: SampleConfig | None = None,
    batch_size: int = MAX_BATCH,
    callback: Callback | None = None,
    progress: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Draw `num_samples` images batch by batch, reproducibly from `seed`: yields uint8
    (n, C, H, W) batches with the labels they were drawn for (a conditional model given none
    draws them all first, from the same seed; None for an unconditional model), so the
    images need never be in memory at once. `callback(step_index, num_steps)` reports
    diffusion progress, batch by batch. Without `sampling`, a model loaded from a checkpoint
    samples with that checkpoint's settings (`fashiongen sample` does the same). `progress`
    shows a bar of images drawn on a terminal (none in logs: tqdm's own check)."""
    if sampling is None:
        sampling = own_sampling(model)
    generator = torch.Generator().manual_seed(seed)
    if labels is None and model.num_classes:
        labels = torch.randint(model.num_classes, (num_samples,), generator=generator)
    with tqdm(
        total=num_samples,
        unit="image",
        desc="sampling",
        leave=False,
        disable=None if progress else True,
    ) as bar:
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            chunk_labels = None if labels is None else labels[start : start + count]
            images = to_uint8(
                model.sample(
                    count,
                    labels=chunk_labels,
                    generator=generator,
                    sampling=sampling,
                    callback=callback,
                )
            )
            bar.update(count)
            yield images, chunk_labels


def generate_labelled(
    model: Family,
    num_samples: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    sampling: SampleConfig | None = None,
    batch_size: int = MAX_BATCH,
    callback: Callback | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`iter_generate`'s images as one uint8 (N, C, H, W) tensor, with their labels."""
    batches = list(
        iter_generate(
            model,
            num_samples,
            labels=labels,
            seed=seed,
            sampling=sampling,
            batch_size=batch_size,
            callback=callback,
            progress=progress,
        )
    )
    images = torch.cat([images for images, _ in batches])
    if batches[0][1] is None:
        return images, None
    return images, torch.cat([batch_labels for _, batch_labels in batches])


def generate(
    model: Family,
    num_samples: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    sampling: SampleConfig | None = None,
    batch_size: int = MAX_BATCH,
    progress: bool = False,
) -> torch.Tensor:
    """The images of `generate_labelled` alone: uint8 (N, C, H, W)."""
    return generate_labelled(
        model,
        num_samples,
        labels=labels,
        seed=seed,
        sampling=sampling,
        batch_size=batch_size,
        progress=progress,
    )[0]


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between batches of Gaussian latents (B, ...), weight in [0, 1].

    Intermediate latents keep the typical norm of a Gaussian sample, where a linear mix would
    pass through the low-density centre (White, arXiv 1609.04468).
    """
    a_flat, b_flat = a.flatten(1).double(), b.flatten(1).double()
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    omega = torch.arccos(cos.clamp(-1, 1)).view(-1, *[1] * (a.dim() - 1))
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6  # slerp degenerates to a linear mix
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    mix = torch.where(
        parallel,
        (1 - weight) * a.double() + weight * b.double(),
        (torch.sin((1 - weight) * omega) * a.double() + torch.sin(weight * omega) * b.double())
        / safe,
    )
    return mix.to(a.dtype)


@torch.no_grad()
def interpolate(
    model: Family,
    *,
    seed_a: int,
    seed_b: int,
    num_frames: int = 8,
    label: int | None = None,
    sampling: SampleConfig | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """uint8 (num_frames, C, H, W): images along the slerp path between two seeds' latents.

    A conditional model keeps one class along the path (`label`, or class 0). Diffusion
    models interpolate their starting noise; use a deterministic sampler (DDIM with eta 0,
    DPM-Solver++) for a smooth path. Without `sampling`, a loaded model uses its
    checkpoint's settings.
    """
    if sampling is None:
        sampling = own_sampling(model)
    ends = [
        model.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(seed))
        for seed in (seed_a, seed_b)
    ]
    weights = torch.linspace(0, 1, num_frames).tolist()
    z = torch.cat([slerp(ends[0], ends[1], w) for w in weights])
    labels = None
    if model.num_classes:
        labels = model.check_labels(num_frames, torch.full((num_frames,), label or 0))
    generator = torch.Generator().manual_seed(seed_a)
    with eval_mode(model):
        x0 = model.generate_from_latents(
            z, labels=labels, generator=generator, sampling=sampling, callback=callback
        )
    return to_uint8(x0.clamp(-1, 1))


def sample_to(
    out: str | Path,
    model: Family,
    num_samples: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    sampling: SampleConfig | None = None,
    class_names: list[str] | None = None,
    num_rows: int | None = None,
    overwrite: bool = False,
    batch_size: int = MAX_BATCH,
    progress: bool = False,
) -> Path:
    """Draw `num_samples` images (as `iter_generate`) and write them to `out` by its form.

    A grid or an `.npz` holds the images in memory, so their count is bounded
    (`fashiongen.limits`); a folder of PNGs is written batch by batch. Both checks, and the
    refusal of an existing `out` without `overwrite`, come before any sampling.
    """
    form = output_form(out)
    check_free(out, overwrite=overwrite, folder=form == "folder")
    limits.check_count("--num-samples", num_samples, limits.MAX_NUM_SAMPLES)
    if form == "grid":
        limits.check_count(
            "--num-samples",
            num_samples,
            limits.MAX_GRID_IMAGES,
            what="the images one grid PNG may hold",
            hint=": write an .npz or a folder/ instead",
        )
    if form != "folder":
        limits.check_images_fit(
            num_samples,
            model.image_shape,
            hint=", or write a folder/ of PNGs, which streams to disk",
        )
    batches = iter_generate(
        model,
        num_samples,
        labels=labels,
        seed=seed,
        sampling=sampling,
        batch_size=batch_size,
        progress=progress,
    )
    if form == "folder":
        return write_png_folder(
            out, batches, num_images=num_samples, class_names=class_names, overwrite=overwrite
        )
    images, drawn = zip(*batches, strict=True)
    return save_samples(
        out,
        torch.cat(images),
        None if drawn[0] is None else torch.cat(drawn),
        class_names=class_names,
        num_rows=num_rows,
        overwrite=overwrite,
    )
