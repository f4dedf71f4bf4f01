"""The TensorFlow DCGAN tutorial (tensorflow.org/tutorials/generative/dcgan), in PyTorch.

G: dense 100 -> 7x7x256, then 5x5 transposed convolutions 128 (stride 1), 64 and 1 (stride
2), batch norm and LeakyReLU (Keras' default slope 0.3), tanh: 2.3M parameters. D: 5x5
convolutions 64 and 128 (stride 2), LeakyReLU, dropout 0.3, dense 1. Adam 1e-4 for both,
batch 256, binary cross-entropy.
"""

from __future__ import annotations

from torch import nn

from peers.gan_peer import GANPeer

KERAS_BN = {"eps": 1e-3, "momentum": 0.01}  # Keras' BatchNormalization defaults


class TFGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 7 * 7 * 256, bias=False),
            nn.BatchNorm1d(7 * 7 * 256, **KERAS_BN),
            nn.LeakyReLU(0.3),
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False),
            nn.BatchNorm2d(128, **KERAS_BN),
            nn.LeakyReLU(0.3),
            nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1, bias=False),
            nn.BatchNorm2d(64, **KERAS_BN),
            nn.LeakyReLU(0.3),
            nn.ConvTranspose2d(64, 1, 5, 2, 2, output_padding=1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z, labels=None):
        return self.body(self.project(z).view(-1, 256, 7, 7))


class TFDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 64, 5, 2, 2),
            nn.LeakyReLU(0.3),
            nn.Dropout(0.3),
            nn.Conv2d(64, 128, 5, 2, 2),
            nn.LeakyReLU(0.3),
            nn.Dropout(0.3),
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, 1),
        )

    def forward(self, x, labels=None):
        return self.body(x).squeeze(1)


class TFTutorialDCGAN(GANPeer):
    batch_size = 256

    def __init__(self, seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        super().__init__(
            TFGenerator(self.latent_dim), TFDiscriminator(), lr=1e-4, betas=(0.9, 0.999)
        )
