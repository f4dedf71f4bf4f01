"""DCGAN family (Radford et al., arXiv 1511.06434) with optional discriminator reversion.

Networks live in `nets/conv.py`; the adversarial step and the reversion controller in
`models/adversarial.py`. Conditional when `num_classes > 0` (label embedding in G,
projection discriminator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fashiongen.config import require
from fashiongen.models.adversarial import (
    AdversarialConfig,
    AdversarialFamily,
    DiscriminatorReversion,
)
from fashiongen.models.base import ImageShape
from fashiongen.nets.conv import ConvDiscriminator, ConvGenerator


@dataclass(frozen=True)
class DCGANConfig(AdversarialConfig):
    name: str = "dcgan"
    latent_dim: int = 64
    g_width: int = 64  # channels of G's last hidden layer; doubling towards the input
    g_extra_convs: int = 0  # stride-1 3x3 conv layers in G after each inner up-sampling
    d_width: int = 64  # channels of D's first layer; doubling with depth
    dropout: float = 0.3
    use_spectral_norm: bool = False
    use_minibatch_std: bool = True  # D sees each small group's feature spread: fights collapse
    d_reversion: bool = False
    d_snapshot_every_n_steps: int = 100
    d_reversion_trigger: Literal["fake_accuracy", "d_loss"] = "fake_accuracy"
    d_reversion_threshold: float = 0.95
    d_reversion_patience: int = 20  # consecutive dominating steps before reverting
    d_reversion_cooldown: int = 200  # steps after a reversion before the next may happen

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.g_width >= 1 and self.d_width >= 1, "model.g_width/d_width must be >= 1")
        require(0 <= self.g_extra_convs <= 8, "model.g_extra_convs must be between 0 and 8")
        require(0 <= self.dropout < 1, "model.dropout must lie in [0, 1)")
        require(self.d_snapshot_every_n_steps >= 1, "model.d_snapshot_every_n_steps must be >= 1")
        require(self.d_reversion_patience >= 1, "model.d_reversion_patience must be >= 1")
        require(self.d_reversion_cooldown >= 0, "model.d_reversion_cooldown must be >= 0")


class DCGAN(AdversarialFamily):
    Config = DCGANConfig
    training_only_modules = ("discriminator", "reversion")  # D and its snapshot

    def __init__(self, config: DCGANConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        self.generator = ConvGenerator(
            image_shape, config.latent_dim, config.g_width, config.num_classes, config.g_extra_convs
        )
        self.discriminator = ConvDiscriminator(
            image_shape,
            config.d_width,
            config.dropout,
            config.num_classes,
            config.use_spectral_norm,
            config.use_minibatch_std,
        )
        if config.d_reversion:
            self.reversion = DiscriminatorReversion(
                self.discriminator,
                every_n_steps=config.d_snapshot_every_n_steps,
                trigger=config.d_reversion_trigger,
                threshold=config.d_reversion_threshold,
                patience=config.d_reversion_patience,
                cooldown=config.d_reversion_cooldown,
            )
