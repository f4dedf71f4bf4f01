"""Pictures of a trained model beyond sample grids: interpolations, and for autoencoders,
reconstructions and latent traversals.

`write_run_visuals` is called at the end of training and by `fashiongen visualize RUN`;
it writes what applies to the family (capabilities, not family names, decide):
  interpolation.png    rows of slerp paths between pairs of seeds (every family)
  reconstructions.png  test images over their reconstructions (families with `reconstruct`)
  latent_traversal.png one row per latent dimension, swept from -3 to 3 sd (families with
                       `decode` and a flat latent, i.e. the VAE)
"""

from __future__ import annotations

from pathlib import Path

import torch

from fashiongen.generate import interpolate
from fashiongen.images import save_grid, to_model_range, to_uint8
from fashiongen.models.base import Family

NUM_PATHS = 4
NUM_FRAMES = 10
NUM_RECONSTRUCTIONS = 16
NUM_TRAVERSED_DIMS = 8
TRAVERSAL_RANGE = 3.0


@torch.no_grad()
def write_run_visuals(model: Family, run_dir: str | Path, test_images: torch.Tensor,
                      test_labels: torch.Tensor, *, seed: int = 0,
                      sampling=None) -> list[Path]:
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
    written = []
    rows = []
    for i in range(NUM_PATHS):
        label = i % model.num_classes if model.num_classes else None
        rows.append(interpolate(model, seed_a=seed + 2 * i, seed_b=seed + 2 * i + 1,
                                num_frames=NUM_FRAMES, label=label, sampling=sampling))
    written.append(save_grid(run_dir / "interpolation.png", torch.cat(rows), num_rows=NUM_PATHS))

    reconstruct = getattr(model, "reconstruct", None)
    if callable(reconstruct):
        x0 = to_model_range(test_images[:NUM_RECONSTRUCTIONS]).to(model.device)
        labels = test_labels[:NUM_RECONSTRUCTIONS].to(model.device)
        x0_hat = reconstruct(x0, labels)
        pictures = torch.cat([to_uint8(x0), to_uint8(x0_hat)])
        written.append(save_grid(run_dir / "reconstructions.png", pictures, num_rows=2))

    decode = getattr(model, "decode", None)
    if callable(decode) and len(model.latent_shape) == 1:
        num_dims = min(NUM_TRAVERSED_DIMS, model.latent_shape[0])
        values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, NUM_FRAMES)
        z = torch.zeros(num_dims, NUM_FRAMES, model.latent_shape[0])
        for dim in range(num_dims):
            z[dim, :, dim] = values
        z = z.flatten(0, 1).to(model.device)
        labels = None
        if model.num_classes:
            labels = torch.full((len(z),), int(test_labels[0]), device=model.device)
        pictures = to_uint8(decode(z, labels))
        written.append(save_grid(run_dir / "latent_traversal.png", pictures, num_rows=num_dims))
    return written
