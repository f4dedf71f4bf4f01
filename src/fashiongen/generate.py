"""Sampling from a trained model and writing the results: grid PNG, PNG folder or npz.

Used by the CLI, the web page and the notebook. Class names may be given by name
("sneaker", case- and punctuation-insensitive) or by id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from fashiongen.checkpoint import (
    Checkpoint,
    atomic_path,
    missing_folders,
    remove_empty_folders,
)
from fashiongen.config import SampleConfig
from fashiongen.errors import ConfigError
from fashiongen.images import save_grid, to_pil, to_uint8
from fashiongen.models.base import Callback, Family, eval_mode

MAX_BATCH = 256


def class_names_of(checkpoint: Checkpoint) -> list[str]:
    """The class names recorded at training time (ids as strings if none were)."""
    names = json.loads(checkpoint.metadata.get("extra", "{}")).get("class_names")
    return list(names or [str(i) for i in range(checkpoint.config.model.num_classes)])


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_classes(requested: list[str], class_names: list[str]) -> list[int]:
    """['sneaker', '9'] -> [7, 9]; unknown names raise ConfigError listing the choices."""
    lookup = {_normalise(n): i for i, n in enumerate(class_names)}
    # Common short forms of Fashion-MNIST's names.
    for alias, full in (("tshirt", "tshirttop"), ("top", "tshirttop"), ("boot", "ankleboot")):
        if full in lookup:
            lookup.setdefault(alias, lookup[full])
    ids = []
    for item in requested:
        for part in item.split(","):
            key = _normalise(part)
            if key.isdigit() and int(key) < len(class_names):
                ids.append(int(key))
            elif key in lookup:
                ids.append(lookup[key])
            else:
                raise ConfigError(f"unknown class {part!r}; choose from: {', '.join(class_names)}")
    return ids


@torch.no_grad()
def generate_labelled(model: Family, num_samples: int, *, labels: torch.Tensor | None = None,
                      seed: int = 0, sampling: SampleConfig | None = None,
                      batch_size: int = MAX_BATCH, callback: Callback | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw `num_samples` images as uint8 (N, C, H, W), in batches, reproducibly from `seed`,
    with the labels they were drawn for (a conditional model given none draws them first,
    from the same seed; None for an unconditional model). `callback(step_index, num_steps)`
    reports diffusion progress, batch by batch."""
    generator = torch.Generator().manual_seed(seed)
    if labels is None and model.num_classes:
        labels = torch.randint(model.num_classes, (num_samples,), generator=generator)
    chunks = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        chunk_labels = None if labels is None else labels[start:start + count]
        chunks.append(to_uint8(model.sample(count, labels=chunk_labels, generator=generator,
                                            sampling=sampling, callback=callback)))
    return torch.cat(chunks), labels


def generate(model: Family, num_samples: int, *, labels: torch.Tensor | None = None,
             seed: int = 0, sampling: SampleConfig | None = None,
             batch_size: int = MAX_BATCH) -> torch.Tensor:
    """The images of `generate_labelled` alone: uint8 (N, C, H, W)."""
    return generate_labelled(model, num_samples, labels=labels, seed=seed, sampling=sampling,
                             batch_size=batch_size)[0]


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
    mix = torch.where(parallel, (1 - weight) * a.double() + weight * b.double(),
                      (torch.sin((1 - weight) * omega) * a.double()
                       + torch.sin(weight * omega) * b.double()) / safe)
    return mix.to(a.dtype)


@torch.no_grad()
def interpolate(model: Family, *, seed_a: int, seed_b: int, num_frames: int = 8,
                label: int | None = None, sampling: SampleConfig | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """uint8 (num_frames, C, H, W): images along the slerp path between two seeds' latents.

    A conditional model keeps one class along the path (`label`, or class 0). Diffusion
    models interpolate their starting noise; use a deterministic sampler (DDIM with eta 0,
    DPM-Solver++) for a smooth path.
    """
    ends = [model.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(seed))
            for seed in (seed_a, seed_b)]
    weights = torch.linspace(0, 1, num_frames).tolist()
    z = torch.cat([slerp(ends[0], ends[1], w) for w in weights])
    labels = None
    if model.num_classes:
        labels = model.check_labels(num_frames, torch.full((num_frames,), label or 0))
    generator = torch.Generator().manual_seed(seed_a)
    with eval_mode(model):
        x0 = model.generate_from_latents(z, labels=labels, generator=generator,
                                         sampling=sampling, callback=callback)
    return to_uint8(x0.clamp(-1, 1))


def save_samples(out: str | Path, images: torch.Tensor, labels: torch.Tensor | None = None,
                 *, class_names: list[str] | None = None, num_rows: int | None = None) -> Path:
    """Write uint8 images by the target's form: `x.png` a grid, `x.npz` arrays, `dir/` PNGs."""
    out_text = str(out)
    out = Path(out)
    if out.suffix.lower() == ".png":
        return save_grid(out, images, num_rows=num_rows)
    if out.suffix.lower() == ".npz":
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            arrays = {"images": images.numpy()}
            if labels is not None:
                arrays["labels"] = labels.cpu().numpy().astype(np.int64)
            if class_names:
                arrays["class_names"] = np.array(class_names)
            np.savez_compressed(f, **arrays)
        return out
    if out_text.endswith(("/", "\\")) or out.is_dir() or not out.suffix:
        created = missing_folders(out)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for i, image in enumerate(images):
                label = "" if labels is None else f"_{_normalise(class_names[int(labels[i])])}" \
                    if class_names else f"_{int(labels[i])}"
                picture = image.permute(1, 2, 0).numpy()
                with atomic_path(out / f"{i:05d}{label}.png") as tmp:
                    to_pil(picture).save(tmp, format="PNG")
                written.append(out / f"{i:05d}{label}.png")
        except BaseException:  # a failed write leaves no partial set of images
            for path in written:
                path.unlink(missing_ok=True)
            remove_empty_folders(created)
            raise
        return out
    raise ConfigError(f"cannot tell how to write {out}: use a .png grid, a .npz file, or a folder/")
