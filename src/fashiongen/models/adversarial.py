"""What the GAN families share: their config fields, the adversarial step and the
discriminator balance controller ("D weight reversion").

Losses (`model.loss`): the non-saturating loss of Goodfellow et al. (arXiv 1406.2661); the
hinge loss of Lim & Ye (arXiv 1705.02894, as in SAGAN/BigGAN); and the relativistic pairing
loss of R3GAN (Huang et al., arXiv 2501.05441, eq. 2), softplus(-(D(x) - D(G(z)))) for D and
softplus(-(D(G(z)) - D(x))) for G, each fake paired with a real image of the same class.
Zero-centred gradient penalties keep D smooth where the data and the fakes lie: R1 on real
images (Mescheder et al., arXiv 1801.04406) and R2 on fakes, gamma/2 * E||grad_x D(x)||^2
(R3GAN eq. 4). Computed lazily every `reg_every_n_steps` D steps and scaled by that interval
(StyleGAN2, arXiv 1912.04958, sec. B), they cost little more than a plain D step.

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

from fashiongen import precision
from fashiongen.config import ModelConfig, TrainConfig, require
from fashiongen.models.base import Batch, Family, ImageShape

AdversarialLoss = Literal["non_saturating", "hinge", "relativistic"]


@dataclass(frozen=True)
class AdversarialConfig(ModelConfig):
    """Fields both GAN families share."""

    latent_dim: int = 64
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing
    loss: AdversarialLoss = "non_saturating"
    d_lr_scale: float = 1.0  # D's learning rate = train.lr * d_lr_scale (TTUR when > 1)
    r1_gamma: float = 0.0  # zero-centred gradient penalty on real images (0 = off)
    r2_gamma: float = 0.0  # the same on generated images
    reg_every_n_steps: int = 1  # lazy regularisation: penalties every n-th D step, times n
    # gamma falls linearly to r_gamma_final_ratio x its start over the first
    # r_gamma_decay_steps D steps (0 = constant), as R3GAN anneals it
    r_gamma_final_ratio: float = 1.0
    r_gamma_decay_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.latent_dim >= 1, "model.latent_dim must be >= 1")
        require(0 <= self.label_smoothing < 0.5, "model.label_smoothing must lie in [0, 0.5)")
        require(0 < self.d_lr_scale <= 100, "model.d_lr_scale must lie in (0, 100]")
        require(0 <= self.r1_gamma <= 1e4, "model.r1_gamma must lie in [0, 10000]")
        require(0 <= self.r2_gamma <= 1e4, "model.r2_gamma must lie in [0, 10000]")
        require(1 <= self.reg_every_n_steps <= 1000, "model.reg_every_n_steps must lie in 1..1000")
        require(0 < self.r_gamma_final_ratio <= 1, "model.r_gamma_final_ratio must lie in (0, 1]")
        require(self.r_gamma_decay_steps >= 0, "model.r_gamma_decay_steps must be >= 0")
        require(
            self.label_smoothing == 0 or self.loss == "non_saturating",
            "model.label_smoothing applies to the non_saturating loss only",
        )

    def penalty_weights(self, d_step: int) -> tuple[float, float]:
        """(R1, R2) weights at D step `d_step` (0-based), lazy scaling included; (0, 0) at the
        steps without regularisation."""
        if d_step % self.reg_every_n_steps or not (self.r1_gamma or self.r2_gamma):
            return 0.0, 0.0
        progress = min(1.0, d_step / self.r_gamma_decay_steps) if self.r_gamma_decay_steps else 0
        scale = self.reg_every_n_steps * (1 - progress * (1 - self.r_gamma_final_ratio))
        return self.r1_gamma * scale, self.r2_gamma * scale

    def logged_penalties(self, losses: dict[str, float]) -> dict[str, float]:
        """The R1/R2 values a step reports: k x the penalty at the regularised steps and 0
        between, so every step has the same keys and a logged window's mean is the mean
        penalty ({} when unregularised)."""
        if not (self.r1_gamma or self.r2_gamma):
            return {}
        return {
            k: losses.get(k, 0.0) * self.reg_every_n_steps for k in ("r1_penalty", "r2_penalty")
        }


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    loss: AdversarialLoss,
    label_smoothing: float,
) -> torch.Tensor:
    if loss == "relativistic":
        return F.softplus(fake_logits - real_logits).mean()
    if loss == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.full_like(real_logits, 1.0 - label_smoothing)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(
    fake_logits: torch.Tensor, loss: AdversarialLoss, real_logits: torch.Tensor | None = None
) -> torch.Tensor:
    """`real_logits` (D's scores of the paired real images, no gradient needed) only for the
    relativistic loss."""
    if loss == "relativistic":
        return F.softplus(real_logits - fake_logits).mean()
    if loss == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gradient_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Per-sample squared gradient norm ||grad_x D(x)||^2 (B,), differentiable (R1/R2).

    Each logit depends on its own input only (D has no batch norm), so the gradient of the
    sum is every sample's own gradient (up to minibatch-std's small cross terms)."""
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(1)


def discriminator_update(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None,
    optimizer: torch.optim.Optimizer,
    *,
    loss: AdversarialLoss = "non_saturating",
    label_smoothing: float = 0.0,
    r1_weight: float = 0.0,
    r2_weight: float = 0.0,
) -> tuple[dict[str, float], torch.Tensor]:
    """One D update on `real` and (detached) `fake` images of the same `labels`; returns
    its losses and D's scores of the real images (detached).

    Real and fake images go through D in one batch (D has no batch norm). With a penalty
    weight, the update adds r1_weight/2 * E||grad D(real)||^2 + r2_weight/2 * E||grad
    D(fake)||^2; that pass calls D's eager `forward` (compiled graphs have no double
    backward) in fp32."""
    batch_size = real.shape[0]
    both_labels = None if labels is None else torch.cat([labels, labels])
    regularise = bool(r1_weight or r2_weight)
    both = torch.cat([real, fake.detach()]).requires_grad_(regularise)
    # R1/R2's double backward is fp32: a regularised D pass runs outside bf16 autocast.
    with precision.full_precision(real.device, when=regularise):
        logits = (discriminator.forward if regularise else discriminator)(both, both_labels)
    logits = logits.float()
    real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
    d_loss = discriminator_loss(real_logits, fake_logits, loss, label_smoothing)
    d_total = d_loss
    losses = {}
    if regularise:
        penalty = gradient_penalty(logits, both)
        r1, r2 = penalty[:batch_size].mean(), penalty[batch_size:].mean()
        d_total = d_loss + 0.5 * (r1_weight * r1 + r2_weight * r2)
        losses = {"r1_penalty": r1.item(), "r2_penalty": r2.item()}
    optimizer.zero_grad(set_to_none=True)
    d_total.backward()
    optimizer.step()
    real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
    losses = {
        "d_loss": d_loss.item(),
        "d_real": torch.sigmoid(real_logits).mean().item(),
        "d_fake_accuracy": (fake_logits < (real_logits if loss == "relativistic" else 0))
        .float()
        .mean()
        .item(),
        **losses,
    }
    return losses, real_logits


def scored_by(
    discriminator: nn.Module,
    fake: torch.Tensor,
    labels: torch.Tensor | None,
    real_logits: torch.Tensor,
    loss: AdversarialLoss,
) -> torch.Tensor:
    """G's loss for `fake` under D, whose parameters are frozen meanwhile so no gradient is
    wasted on them. The relativistic loss pairs each fake with its real's score from D's
    update (one D step old): re-scoring the reals would cost half a D pass more for little
    change."""
    discriminator.requires_grad_(False)
    try:
        return generator_loss(discriminator(fake, labels).float(), loss, real_logits)
    finally:
        discriminator.requires_grad_(True)


def adversarial_step(
    generator: nn.Module,
    discriminator: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    z: torch.Tensor,
    optimizers: dict[str, torch.optim.Optimizer],
    *,
    loss: AdversarialLoss = "non_saturating",
    label_smoothing: float = 0.0,
    r1_weight: float = 0.0,
    r2_weight: float = 0.0,
) -> dict[str, float]:
    """One D update then one G update with `loss`; returns the losses."""
    fake = generator(z, labels).float()  # losses in fp32 under bf16 autocast (precision.py)
    losses, real_logits = discriminator_update(
        discriminator,
        x0,
        fake,
        labels,
        optimizers["discriminator"],
        loss=loss,
        label_smoothing=label_smoothing,
        r1_weight=r1_weight,
        r2_weight=r2_weight,
    )
    g_loss = scored_by(discriminator, fake, labels, real_logits, loss)
    optimizers["generator"].zero_grad(set_to_none=True)
    g_loss.backward()
    optimizers["generator"].step()
    return {"d_loss": losses.pop("d_loss"), "g_loss": g_loss.item(), **losses}


def optimizer_step_count(optimizer: torch.optim.Optimizer) -> int:
    """Steps an Adam optimizer has taken (its saved state holds the count, so resumed and
    rolled-back runs regularise at exactly the same steps)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if "step" in optimizer.state.get(p, {}):
                return int(optimizer.state[p]["step"])
    return 0


class DiscriminatorReversion(nn.Module):
    """Snapshots D and reverts it when it overpowers G (see the module docstring)."""

    STEP, STREAK, COOLDOWN, NUM_REVERSIONS = range(4)

    def __init__(
        self,
        discriminator: nn.Module,
        *,
        every_n_steps: int,
        trigger: Literal["fake_accuracy", "d_loss"],
        threshold: float,
        patience: int,
        cooldown: int,
    ) -> None:
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
    # The adversary: sampling does not need it (zoo files omit it).
    training_only_modules = ("discriminator",)

    def __init__(self, config: ModelConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        # Set on the instance, never as a class attribute: a class-level None would shadow
        # the submodule a family registers later, and reversion would silently never run.
        self.reversion: DiscriminatorReversion | None = None

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        def adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(
                module.parameters(),
                lr=lr,
                betas=train_cfg.betas,
                weight_decay=train_cfg.weight_decay,
                foreach=True,
            )

        return {
            "generator": adam(self.generator, train_cfg.lr),
            "discriminator": adam(self.discriminator, train_cfg.lr * self.config.d_lr_scale),
        }

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        """One D update then one G update: d_loss, g_loss, d_real, d_fake_accuracy (and
        event_d_reversion, 1 at a step where D was reverted)."""
        x0, labels = batch
        z = torch.randn(x0.shape[0], self.config.latent_dim, device=x0.device)
        r1_weight, r2_weight = self.config.penalty_weights(
            optimizer_step_count(optimizers["discriminator"])
        )
        losses = adversarial_step(
            self.generator,
            self.discriminator,
            x0,
            self.batch_labels(labels),
            z,
            optimizers,
            loss=self.config.loss,
            label_smoothing=self.config.label_smoothing,
            r1_weight=r1_weight,
            r2_weight=r2_weight,
        )
        losses.update(self.config.logged_penalties(losses))
        if self.reversion is not None:
            losses["event_d_reversion"] = float(self.reversion.update(self.discriminator, losses))
        return losses

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def generate_from_latents(
        self, z: torch.Tensor, *, labels: torch.Tensor | None = None, **_: object
    ) -> torch.Tensor:
        """One generator pass; sampler settings do not apply."""
        return self.generator(z, labels)
