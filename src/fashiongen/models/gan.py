"""Fully connected GAN family (Goodfellow et al., arXiv 1406.2661).

An MLP generator (z -> widening LeakyReLU layers, optionally batch-normed -> tanh pixels)
against an MLP discriminator (LeakyReLU + dropout -> one logit), trained with the
non-saturating loss. Networks live in `nets/mlp.py`, the adversarial step (shared with
`dcgan`) in `models/adversarial.py`. Conditional when `num_classes > 0`: a label embedding
concatenated to z in G, a projection discriminator (Miyato & Koyama, arXiv 1802.05637).
"""

from __future__ import annotations

from dataclasses import dataclass

from fashiongen.config import require
from fashiongen.models.adversarial import AdversarialConfig, AdversarialFamily
from fashiongen.models.base import ImageShape
from fashiongen.nets.mlp import MLPDiscriminator, MLPGenerator


@dataclass(frozen=True)
class GANConfig(AdversarialConfig):
    name: str = "gan"
    latent_dim: int = 100
    g_width: int = 256  # G's first hidden layer; doubling per layer (256-512-1024)
    d_width: int = 256  # D's last hidden layer; doubling towards the input (1024-512-256)
    num_layers: int = 3  # hidden layers in each of G and D
    use_batchnorm: bool = True  # in G only; D sees real and fake in one batch
    dropout: float = 0.3  # in D

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.g_width >= 1 and self.d_width >= 1, "model.g_width/d_width must be >= 1")
        require(1 <= self.num_layers <= 8, "model.num_layers must be between 1 and 8")
        require(0 <= self.dropout < 1, "model.dropout must lie in [0, 1)")


class GAN(AdversarialFamily):
    Config = GANConfig

    def __init__(self, config: GANConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        self.generator = MLPGenerator(
            image_shape,
            config.latent_dim,
            config.g_width,
            config.num_layers,
            config.num_classes,
            config.use_batchnorm,
        )
        self.discriminator = MLPDiscriminator(
            image_shape, config.d_width, config.num_layers, config.dropout, config.num_classes
        )
