"""DCGAN networks (Radford et al., arXiv 1511.06434), sized for any (C, H, W).

The generator maps a latent code to an image with transposed convolutions that double the
resolution; the discriminator halves it with strided convolutions. Both optionally take
class labels: the generator concatenates a label embedding to z, the discriminator adds a
projection term (Miyato & Koyama, arXiv 1802.05637).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fashiongen.errors import ConfigError

MAX_UPSAMPLINGS = 4
MIN_START_SIZE = 4


def upsampling_plan(size: int) -> tuple[int, int]:
    """(start size, number of x2 up-samplings) to reach `size`: 28 -> (7, 2), 64 -> (4, 4)."""
    num = 0
    while size % 2 == 0 and size // 2 >= MIN_START_SIZE and num < MAX_UPSAMPLINGS:
        size //= 2
        num += 1
    return size, num


class ConvGenerator(nn.Module):
    """z (B, latent_dim) [+ labels] -> images (B, C, H, W) in [-1, 1].

    `extra_convs` stride-1 3x3 conv layers follow each up-sampling before the last: depth at
    a resolution without more up-sampling."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        width: int,
        num_classes: int = 0,
        extra_convs: int = 0,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        if height != width_px:
            raise ConfigError(f"DCGAN needs square images, got {height}x{width_px}")
        start, num_up = upsampling_plan(height)
        if num_up == 0:
            raise ConfigError(f"DCGAN cannot reach image size {height}: use an even size >= 8")
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        widths = [width * 2 ** (num_up - 1 - i) for i in range(num_up)]  # e.g. [128, 64]
        self.start_shape = (widths[0], start, start)
        self.project = nn.Sequential(
            nn.Linear(in_dim, widths[0] * start * start, bias=False),
            nn.BatchNorm1d(widths[0] * start * start),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w_out),
                nn.ReLU(inplace=True),
            ]
            for _ in range(extra_convs):
                layers += [
                    nn.Conv2d(w_out, w_out, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(w_out),
                    nn.ReLU(inplace=True),
                ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        h = self.project(z).view(-1, *self.start_shape)
        return self.upsample(h)


class ProjectionHead(nn.Module):
    """features (B, D) [+ labels] -> logits (B,): a linear real/fake score, plus for a
    conditional D the projection term <embed(label), features> (Miyato & Koyama,
    arXiv 1802.05637)."""

    def __init__(self, feature_dim: int, num_classes: int = 0, norm=lambda m: m) -> None:
        super().__init__()
        self.linear = norm(nn.Linear(feature_dim, 1))
        self.label_projection = None
        if num_classes:
            self.label_projection = nn.Embedding(num_classes, feature_dim)
            # N(0, 1) rows would swamp the logits at the start; keep the projection small.
            nn.init.xavier_uniform_(self.label_projection.weight)

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.linear(h).squeeze(1)
        if self.label_projection is not None:
            logits = logits + (self.label_projection(labels) * h).sum(dim=1)
        return logits


class MinibatchStd(nn.Module):
    """Appends the features' standard deviation within small groups of samples as one more
    channel (Karras et al., arXiv 1710.10196), so D can tell a batch that lacks variety: the
    usual cure for a generator that draws one image per class. Groups are runs of consecutive
    samples, which keeps reals and fakes apart when they are concatenated in one batch."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        group = math.gcd(self.group_size, b)
        std = x.view(b // group, group, c, h, w).var(dim=1, unbiased=False).add(1e-8).sqrt()
        std = std.mean(dim=(1, 2, 3)).repeat_interleave(group)  # (b,)
        return torch.cat([x, std.view(b, 1, 1, 1).expand(b, 1, h, w)], dim=1)


class ConvDiscriminator(nn.Module):
    """images (B, C, H, W) [+ labels] -> logits (B,): real vs fake."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        dropout: float,
        num_classes: int = 0,
        use_spectral_norm: bool = False,
        use_minibatch_std: bool = True,
    ) -> None:
        super().__init__()
        channels, size, _ = image_shape
        norm = spectral_norm if use_spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        w_in, w_out = channels, width
        while True:
            layers += [
                norm(nn.Conv2d(w_in, w_out, 4, 2, 1)),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout(dropout),
            ]
            size //= 2
            w_in, w_out = w_out, w_out * 2
            if size <= 7:
                break
        if use_minibatch_std:
            layers.append(MinibatchStd())
            w_in += 1
        self.features = nn.Sequential(*layers, nn.Flatten())
        feature_dim = w_in * size * size
        self.head = ProjectionHead(feature_dim, num_classes, norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), labels)
