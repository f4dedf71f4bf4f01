"""Convolutional encoder and decoder of a VAE (Kingma & Welling, arXiv 1312.6114), any (C, H, W).

The encoder halves the resolution with strided convolutions (doubling the width each time)
and maps the features to a Gaussian posterior's (mu, logvar); the decoder mirrors it with
transposed convolutions. Both optionally take class labels, as in a conditional VAE (Sohn et
al., NeurIPS 2015): a label embedding is concatenated to the encoder's features and to z.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEAKY_SLOPE = 0.2
MAX_DOWNSAMPLINGS = 4
MIN_FEATURE_SIZE = 4
# Keeps exp(logvar) finite in float32 however far an untrained encoder strays.
LOGVAR_RANGE = (-30.0, 20.0)


def downsampling_plan(height: int, width: int) -> tuple[int, tuple[int, int]]:
    """(number of x2 down-samplings, feature size): 28x28 -> (2, (7, 7)), 64x64 -> (4, (4, 4))."""
    num = 0
    while (
        height % 2 == 0
        and width % 2 == 0
        and min(height, width) // 2 >= MIN_FEATURE_SIZE
        and num < MAX_DOWNSAMPLINGS
    ):
        height, width = height // 2, width // 2
        num += 1
    return num, (height, width)


def _widths(width: int, num_down: int) -> list[int]:
    """Encoder widths, doubling per down-sampling: (32, 2) -> [32, 64]."""
    return [width * 2**i for i in range(num_down)]


class ConvEncoder(nn.Module):
    """images (B, C, H, W) in [-1, 1] [+ labels (B,)] -> mu, logvar, each (B, latent_dim)."""

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, width: int, num_classes: int = 0
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        num_down, (h, w) = downsampling_plan(height, width_px)
        layers: list[nn.Module] = []
        w_in = channels
        for w_out in _widths(width, num_down):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
            w_in = w_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        feature_dim = w_in * h * w + (latent_dim if num_classes else 0)
        self.head = nn.Linear(feature_dim, 2 * latent_dim)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        if self.label_embedding is not None:
            h = torch.cat([h, self.label_embedding(labels)], dim=1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class ConvDecoder(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> unbounded (B, C, H, W): Bernoulli logits or
    Gaussian means, as the family's likelihood reads them."""

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, width: int, num_classes: int = 0
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        num_down, (h, w) = downsampling_plan(height, width_px)
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        widths = _widths(width, num_down)[::-1]  # e.g. [64, 32]
        if not widths:
            self.start_shape = tuple(image_shape)
            self.project: nn.Module = nn.Linear(in_dim, math.prod(image_shape))
            self.upsample: nn.Module = nn.Identity()
            return
        self.start_shape = (widths[0], h, w)
        self.project = nn.Sequential(
            nn.Linear(in_dim, math.prod(self.start_shape)), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        )
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 4, 2, 1),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1))
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return self.upsample(self.project(z).view(-1, *self.start_shape))
