"""Fully connected GAN networks (Goodfellow et al., arXiv 1406.2661), sized for any (C, H, W).

The generator maps a latent code through widening LeakyReLU layers to C*H*W pixels and a
tanh; the discriminator mirrors it with narrowing LeakyReLU + dropout layers down to one
logit. Both optionally take class labels: the generator concatenates a label embedding to z,
the discriminator adds a projection term (Miyato & Koyama, arXiv 1802.05637).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fashiongen.nets.conv import ProjectionHead

LEAKY_SLOPE = 0.2


def layer_widths(width: int, num_layers: int) -> list[int]:
    """Hidden widths that double per layer: (256, 3) -> [256, 512, 1024]."""
    return [width * 2**i for i in range(num_layers)]


class Dropout(nn.Module):
    """`nn.Dropout` drawing its mask by thresholding uniform noise: the same distribution,
    but about twice as fast on CPU, where drawing Bernoulli masks costs ~15% of a GAN step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLPGenerator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        width: int,
        num_layers: int,
        num_classes: int = 0,
        use_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        layers: list[nn.Module] = []
        in_dim = latent_dim * (2 if num_classes else 1)
        for out_dim in layer_widths(width, num_layers):
            # BatchNorm makes the bias redundant.
            layers.append(nn.Linear(in_dim, out_dim, bias=not use_batchnorm))
            if use_batchnorm:
                layers.append(nn.BatchNorm1d(out_dim))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
            in_dim = out_dim
        layers += [nn.Linear(in_dim, math.prod(image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """images (B, C, H, W) [+ labels (B,)] -> logits (B,): real vs fake."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        num_layers: int,
        dropout: float,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        in_dim = math.prod(image_shape)
        for out_dim in reversed(layer_widths(width, num_layers)):
            layers += [
                nn.Linear(in_dim, out_dim),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                Dropout(dropout),
            ]
            in_dim = out_dim
        self.features = nn.Sequential(*layers)
        self.head = ProjectionHead(in_dim, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), labels)
