"""What the GAN families share: their config fields, the adversarial step (the
non-saturating loss of Goodfellow et al., arXiv 1406.2661, or the hinge loss of Lim & Ye,
arXiv 1705.02894, as in SAGAN/BigGAN), and the discriminator balance controller
("D weight reversion").

A separate discriminator learning rate (`d_lr_scale`, the two time-scale update rule of
Heusel et al., arXiv 1706.08500) is the usual companion of the hinge loss.

Reversion: every `every_n_steps` steps a copy of D is kept, as long as D is not currently
dominating; when D overpowers G (its accuracy on fakes above, or its loss below, a
threshold) for `patience` consecutive steps, D's weights are put back to that copy, then
a cooldown prevents another reversion for a while. The controller's counters and snapshot
are buffers, so checkpoints and exact resumption include them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fashiongen.config import ModelConfig, TrainConfig, require
from fashiongen.models.base import Batch, Family

AdversarialLoss = Literal["non_saturating", "hinge"]


@dataclass(frozen=True)
class AdversarialConfig(ModelConfig):
    """Fields both GAN families share."""

    latent_dim: int = 64
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing
    loss: AdversarialLoss = "non_saturating"
    d_lr_scale: float = 1.0  # D's learning rate = train.lr * d_lr_scale (TTUR when > 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.latent_dim >= 1, "model.latent_dim must be >= 1")
        require(0 <= self.label_smoothing < 0.5, "model.label_smoothing must lie in [0, 0.5)")
        require(0 < self.d_lr_scale <= 100, "model.d_lr_scale must lie in (0, 100]")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       loss: AdversarialLoss, label_smoothing: float) -> torch.Tensor:
    if loss == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(
                real_logits, 1.0 - label_smoothing))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, loss: AdversarialLoss) -> torch.Tensor:
    if loss == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def adversarial_step(generator: nn.Module, discriminator: nn.Module, x0: torch.Tensor,
                     labels: torch.Tensor | None, z: torch.Tensor,
                     optimizers: dict[str, torch.optim.Optimizer], *,
                     loss: AdversarialLoss = "non_saturating",
                     label_smoothing: float = 0.0) -> dict[str, float]:
    """One D update then one G update with `loss`; returns the losses.

    Real and fake images go through D in one batch (D has no batch norm); D's parameters
    are frozen during G's backward pass so no gradient is wasted on them.
    """
    batch_size = x0.shape[0]
    fake = generator(z, labels)
    both_labels = None if labels is None else torch.cat([labels, labels])
    logits = discriminator(torch.cat([x0, fake.detach()]), both_labels)
    real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
    d_loss = discriminator_loss(real_logits, fake_logits, loss, label_smoothing)
    optimizers["discriminator"].zero_grad(set_to_none=True)
    d_loss.backward()
    optimizers["discriminator"].step()

    discriminator.requires_grad_(False)
    g_loss = generator_loss(discriminator(fake, labels), loss)
    optimizers["generator"].zero_grad(set_to_none=True)
    g_loss.backward()
    optimizers["generator"].step()
    discriminator.requires_grad_(True)
    return {
        "d_loss": d_loss.item(),
        "g_loss": g_loss.item(),
        "d_real": torch.sigmoid(real_logits).mean().item(),
        "d_fake_accuracy": (fake_logits < 0).float().mean().item(),
    }


class DiscriminatorReversion(nn.Module):
    """Snapshots D and reverts it when it overpowers G (see the module docstring)."""

    STEP, STREAK, COOLDOWN, NUM_REVERSIONS = range(4)

    def __init__(self, discriminator: nn.Module, *, every_n_steps: int,
                 trigger: Literal["fake_accuracy", "d_loss"], threshold: float,
                 patience: int, cooldown: int) -> None:
        super().__init__()
        self.snapshot = copy.deepcopy(discriminator).requires_grad_(False)
        self.every_n_steps = every_n_steps
        self.trigger = trigger
        self.threshold = threshold
        self.patience = patience
        self.cooldown = cooldown
        self.register_buffer("counters", torch.zeros(4, dtype=torch.long))

    @property
    def num_reversions(self) -> int:
        return int(self.counters[self.NUM_REVERSIONS])

    @torch.no_grad()
    def update(self, discriminator: nn.Module, losses: dict[str, float]) -> bool:
        """Call after every step; returns True when D was reverted at this step."""
        c = self.counters
        c[self.STEP] += 1
        if self.trigger == "fake_accuracy":
            dominating = losses["d_fake_accuracy"] > self.threshold
        else:
            dominating = losses["d_loss"] < self.threshold
        c[self.STREAK] = c[self.STREAK] + 1 if dominating else 0
        if c[self.COOLDOWN] > 0:
            c[self.COOLDOWN] -= 1
        if c[self.STREAK] >= self.patience and c[self.COOLDOWN] == 0:
            discriminator.load_state_dict(self.snapshot.state_dict())
            c[self.STREAK] = 0
            c[self.COOLDOWN] = self.cooldown
            c[self.NUM_REVERSIONS] += 1
            return True
        if c[self.STEP] % self.every_n_steps == 0 and c[self.STREAK] == 0:
            self.snapshot.load_state_dict(discriminator.state_dict())
        return False


class AdversarialFamily(Family):
    """The part both GAN families share: two Adam optimizers, the adversarial step (with the
    reversion controller when the family set one), and decoding latents with G.

    Subclasses build `self.generator` (z, labels -> x0) and `self.discriminator`
    (x, labels -> logits); their config is an `AdversarialConfig`.
    """

    ema_module_names = ("generator",)
    reversion: DiscriminatorReversion | None = None

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        def adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(module.parameters(), lr=lr, betas=train_cfg.betas,
                                    weight_decay=train_cfg.weight_decay, foreach=True)

        return {"generator": adam(self.generator, train_cfg.lr),
                "discriminator": adam(self.discriminator, train_cfg.lr * self.config.d_lr_scale)}

    def train_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
                   ) -> dict[str, float]:
        """One D update then one G update: d_loss, g_loss, d_real, d_fake_accuracy (and
        event_d_reversion, 1 at a step where D was reverted)."""
        x0, labels = batch
        z = torch.randn(x0.shape[0], self.config.latent_dim, device=x0.device)
        losses = adversarial_step(self.generator, self.discriminator, x0,
                                  self.batch_labels(labels), z, optimizers,
                                  loss=self.config.loss,
                                  label_smoothing=self.config.label_smoothing)
        if self.reversion is not None:
            losses["event_d_reversion"] = float(self.reversion.update(self.discriminator, losses))
        return losses

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def generate_from_latents(self, z: torch.Tensor, *, labels: torch.Tensor | None = None,
                              **_: object) -> torch.Tensor:
        """One generator pass; sampler settings do not apply."""
        return self.generator(z, labels)
