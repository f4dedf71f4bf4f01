"""The training step both GAN tutorials write: G draws a batch, D sees real and fake in two
forward passes, two Adam optimizers, binary cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GANPeer:
    latent_dim = 100
    batch_size: int

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        lr: float,
        betas: tuple[float, float],
    ) -> None:
        self.generator, self.discriminator = generator, discriminator
        self.networks = {"generator": generator, "discriminator": discriminator}
        self.optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
            for name, net in self.networks.items()
        }

    def train_step(self, x0: torch.Tensor) -> dict[str, float]:
        z = torch.randn(x0.shape[0], self.latent_dim)
        fake = self.generator(z)
        g_logits = self.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
        self.optimizers["generator"].zero_grad()
        g_loss.backward()
        self.optimizers["generator"].step()

        real_logits = self.discriminator(x0)
        fake_logits = self.discriminator(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        self.optimizers["discriminator"].zero_grad()
        d_loss.backward()
        self.optimizers["discriminator"].step()
        return {"g_loss": g_loss.item(), "d_loss": d_loss.item()}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        self.generator.eval()
        z = torch.randn(num_samples, self.latent_dim, generator=generator)
        images = torch.cat([self.generator(chunk) for chunk in z.split(500)])
        self.generator.train()
        return images
