"""Pictures of a trained model beyond sample grids: interpolations, and for autoencoders,
reconstructions and latent traversals.

`write_run_visuals` is called at the end of training and by `fashiongen visualize RUN`;
it writes what applies to the family (capabilities, not family names, decide):
  interpolation.png    rows of slerp paths between pairs of seeds (every family)
  reconstructions.png  test images over their reconstructions (an `Autoencoder`)
  latent_traversal.png one row per latent dimension, swept from -3 to 3 sd (an
                       `Autoencoder` with a flat latent, i.e. the VAE)
"""

from __future__ import annotations

from pathlib import Path

import torch

from fashiongen.config import SampleConfig
from fashiongen.generate import interpolate
from fashiongen.images import save_grid, to_model_range, to_uint8
from fashiongen.models.base import Autoencoder, Family

NUM_PATHS = 4
NUM_FRAMES = 10
NUM_RECONSTRUCTIONS = 16
NUM_TRAVERSED_DIMS = 8
TRAVERSAL_RANGE = 3.0


@torch.no_grad()
def write_run_visuals(
    model: Family,
    run_dir: str | Path,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    seed: int = 0,
    sampling: SampleConfig | None = None,
) -> list[Path]:
    """Write the pictures that apply to `model` into `run_dir`; returns their paths.

    Args:
        model: a trained family (EMA weights loaded for best results).
        run_dir: where to write.
        test_images: uint8 (N, C, H, W) held-out images, for reconstructions.
        test_labels: (N,) their classes.
        seed: the first seed of the interpolation pairs.
        sampling: sampler settings for diffusion families.
    """
    run_dir = Path(run_dir)
    written = [_write_interpolations(model, run_dir / "interpolation.png", seed, sampling)]
    if isinstance(model, Autoencoder):
        written.append(
            _write_reconstructions(model, run_dir / "reconstructions.png", test_images, test_labels)
        )
        if len(model.latent_shape) == 1:
            written.append(
                _write_latent_traversal(
                    model, run_dir / "latent_traversal.png", int(test_labels[0])
                )
            )
    return written


def _write_interpolations(
    model: Family, path: Path, seed: int, sampling: SampleConfig | None
) -> Path:
    """NUM_PATHS rows of slerp paths between pairs of seeds (a class per row if conditional)."""
    rows = []
    for i in range(NUM_PATHS):
        label = i % model.num_classes if model.num_classes else None
        rows.append(
            interpolate(
                model,
                seed_a=seed + 2 * i,
                seed_b=seed + 2 * i + 1,
                num_frames=NUM_FRAMES,
                label=label,
                sampling=sampling,
            )
        )
    return save_grid(path, torch.cat(rows), num_rows=NUM_PATHS)


def _write_reconstructions(
    model: Autoencoder | Family, path: Path, test_images: torch.Tensor, test_labels: torch.Tensor
) -> Path:
    """The first test images over their reconstructions."""
    x0 = to_model_range(test_images[:NUM_RECONSTRUCTIONS]).to(model.device)
    labels = test_labels[:NUM_RECONSTRUCTIONS].to(model.device)
    x0_hat = model.reconstruct(x0, labels)
    return save_grid(path, torch.cat([to_uint8(x0), to_uint8(x0_hat)]), num_rows=2)


def _write_latent_traversal(model: Autoencoder | Family, path: Path, label: int) -> Path:
    """One row per latent dimension (the first NUM_TRAVERSED_DIMS), swept over
    +-TRAVERSAL_RANGE sd with the others at 0; decoded as class `label` if conditional."""
    num_dims = min(NUM_TRAVERSED_DIMS, model.latent_shape[0])
    values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, NUM_FRAMES)
    z = torch.zeros(num_dims, NUM_FRAMES, model.latent_shape[0])
    for dim in range(num_dims):
        z[dim, :, dim] = values
    z = z.flatten(0, 1).to(model.device)  # (num_dims * NUM_FRAMES, latent_dim)
    labels = torch.full((len(z),), label, device=model.device) if model.num_classes else None
    return save_grid(path, to_uint8(model.decode(z, labels)), num_rows=num_dims)
