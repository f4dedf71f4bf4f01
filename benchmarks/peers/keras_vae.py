"""The Keras convolutional VAE example (keras.io/examples/generative/vae), in PyTorch, with a
16-dimensional latent (the example's 2 is for its latent-space plot).

Encoder: 3x3 stride-2 convolutions 32 and 64, dense 16, then mean and log-variance. Decoder:
dense 7x7x64, 3x3 stride-2 transposed convolutions 64 and 32, a 3x3 one to 1 channel,
sigmoid. Loss: per-image summed binary cross-entropy plus KL; Adam 1e-3, batch 128.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LATENT_DIM = 16


class KerasVAE:
    batch_size = 128

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 16),
            nn.ReLU(),
            nn.Linear(16, 2 * LATENT_DIM),
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT_DIM, 64 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 3, 1, 1),
        )  # logits; the sigmoid is in the loss
        self.networks = {"encoder": self.encoder, "decoder": self.decoder}
        self.optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.decoder.parameters()], lr=1e-3
        )

    def train_step(self, x0: torch.Tensor) -> dict[str, float]:
        target = (x0 + 1) / 2
        mean, log_var = self.encoder(target).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        logits = self.decoder(z)
        reconstruction = (
            F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            .sum(dim=(1, 2, 3))
            .mean()
        )
        kl = (-0.5 * (1 + log_var - mean.square() - log_var.exp())).sum(dim=1).mean()
        loss = reconstruction + kl
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "kl": kl.item()}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(num_samples, LATENT_DIM, generator=generator)
        return torch.sigmoid(self.decoder(z)) * 2 - 1
