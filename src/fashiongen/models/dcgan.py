"""DCGAN family (Radford et al., arXiv 1511.06434) with optional discriminator reversion.

Networks live in `nets/conv.py`; the adversarial step and the reversion controller in
`models/adversarial.py`. Conditional when `num_classes > 0` (label embedding in G,
projection discriminator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fashiongen.config import ModelConfig, TrainConfig, require
from fashiongen.models.adversarial import DiscriminatorReversion, adversarial_step
from fashiongen.models.base import Batch, Family, ImageShape
from fashiongen.nets.conv import ConvDiscriminator, ConvGenerator


@dataclass(frozen=True)
class DCGANConfig(ModelConfig):
    name: str = "dcgan"
    latent_dim: int = 64
    g_width: int = 64  # channels of G's last hidden layer; doubling towards the input
    d_width: int = 64  # channels of D's first layer; doubling with depth
    dropout: float = 0.3
    use_spectral_norm: bool = False
    use_minibatch_std: bool = True  # D sees each small group's feature spread: fights collapse
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing
    d_reversion: bool = False
    d_snapshot_every_n_steps: int = 100
    d_reversion_trigger: Literal["fake_accuracy", "d_loss"] = "fake_accuracy"
    d_reversion_threshold: float = 0.95
    d_reversion_patience: int = 20  # consecutive dominating steps before reverting
    d_reversion_cooldown: int = 200  # steps after a reversion before the next may happen

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.latent_dim >= 1, "model.latent_dim must be >= 1")
        require(self.g_width >= 1 and self.d_width >= 1, "model.g_width/d_width must be >= 1")
        require(0 <= self.dropout < 1, "model.dropout must lie in [0, 1)")
        require(0 <= self.label_smoothing < 0.5, "model.label_smoothing must lie in [0, 0.5)")
        require(self.d_snapshot_every_n_steps >= 1, "model.d_snapshot_every_n_steps must be >= 1")
        require(self.d_reversion_patience >= 1, "model.d_reversion_patience must be >= 1")
        require(self.d_reversion_cooldown >= 0, "model.d_reversion_cooldown must be >= 0")


class DCGAN(Family):
    Config = DCGANConfig
    ema_module_names = ("generator",)

    def __init__(self, config: DCGANConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        self.generator = ConvGenerator(image_shape, config.latent_dim, config.g_width,
                                       config.num_classes)
        self.discriminator = ConvDiscriminator(image_shape, config.d_width, config.dropout,
                                               config.num_classes, config.use_spectral_norm,
                                               config.use_minibatch_std)
        self.reversion = None
        if config.d_reversion:
            self.reversion = DiscriminatorReversion(
                self.discriminator, every_n_steps=config.d_snapshot_every_n_steps,
                trigger=config.d_reversion_trigger, threshold=config.d_reversion_threshold,
                patience=config.d_reversion_patience, cooldown=config.d_reversion_cooldown)

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        def adam(module: torch.nn.Module) -> torch.optim.Optimizer:
            return torch.optim.Adam(module.parameters(), lr=train_cfg.lr, betas=train_cfg.betas,
                                    weight_decay=train_cfg.weight_decay, foreach=True)

        return {"generator": adam(self.generator), "discriminator": adam(self.discriminator)}

    def train_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
                   ) -> dict[str, float]:
        x0, labels = batch
        z = torch.randn(x0.shape[0], self.config.latent_dim, device=x0.device)
        losses = adversarial_step(self.generator, self.discriminator, x0,
                                  self.batch_labels(labels), z, optimizers,
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
