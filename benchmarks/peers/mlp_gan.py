"""PyTorch-GAN's MLP GAN (github.com/eriklindernoren/PyTorch-GAN, implementations/gan).

G: 100 -> 128 -> 256 -> 512 -> 1024 -> 784 with batch norm (its eps 0.8, kept) and
LeakyReLU 0.2, tanh; D: 784 -> 512 -> 256 -> 1 with LeakyReLU 0.2. Adam 2e-4 (0.5, 0.999),
batch 64, binary cross-entropy (on logits here: the same loss, numerically safer).
"""

from __future__ import annotations

import torch
from torch import nn

from peers.gan_peer import GANPeer


def _block(width_in: int, width_out: int, normalize: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(width_in, width_out)]
    if normalize:
        layers.append(nn.BatchNorm1d(width_out, 0.8))
    return [*layers, nn.LeakyReLU(0.2)]


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_block(latent_dim, 128, normalize=False),
            *_block(128, 256),
            *_block(256, 512),
            *_block(512, 1024),
            nn.Linear(1024, 28 * 28),
            nn.Tanh(),
        )

    def forward(self, z, labels=None):
        return self.body(z).view(-1, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 512),
            nn.LeakyReLU(0.2),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 1),
        )

    def forward(self, x, labels=None):
        return self.body(x).squeeze(1)


class MLPGAN(GANPeer):
    batch_size = 64

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__(
            MLPGenerator(self.latent_dim), MLPDiscriminator(), lr=2e-4, betas=(0.5, 0.999)
        )
