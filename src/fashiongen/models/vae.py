"""Convolutional VAE family (Kingma & Welling, arXiv 1312.6114), with a beta-VAE KL weight.

A Gaussian posterior q(z|x) from a strided-conv encoder, a standard normal prior, and a
transposed-conv decoder whose likelihood p(x|z) is Bernoulli (BCE on images mapped to
[0, 1]) or Gaussian (fixed scale, or one learned scale as in sigma-VAE, Rybkin et al., arXiv
2006.13202). The loss is the negative ELBO with the KL term weighted by `beta` (Higgins et
al., beta-VAE, ICLR 2017), optionally warmed up linearly from 0 (Bowman et al., arXiv
1511.06349). Networks live in `nets/autoencoder.py`. Conditional when `num_classes > 0`
(labels into encoder and decoder: a CVAE, Sohn et al., NeurIPS 2015).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fashiongen.config import ModelConfig, TrainConfig, require
from fashiongen.errors import ConfigError
from fashiongen.models.base import Batch, Family, ImageShape, eval_mode
from fashiongen.nets.autoencoder import ConvDecoder, ConvEncoder

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class VAEConfig(ModelConfig):
    name: str = "vae"
    latent_dim: int = 16
    width: int = 32  # encoder's first conv; doubling per down-sampling, mirrored by the decoder
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    gaussian_scale: float = 0.1  # decoder std in [-1, 1] pixel units: fixed, or the learned start
    use_learned_scale: bool = False  # gaussian only: learn one log-scale
    beta: float = 1.0  # KL weight; 1 = the ELBO
    kl_warmup_steps: int = 0  # ramp the KL weight linearly from 0 to beta; 0 = off

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.latent_dim >= 1, "model.latent_dim must be >= 1")
        require(self.width >= 1, "model.width must be >= 1")
        require(self.gaussian_scale > 0, "model.gaussian_scale must be > 0")
        require(self.beta >= 0, "model.beta must be >= 0")
        require(self.kl_warmup_steps >= 0, "model.kl_warmup_steps must be >= 0")


def to_unit_range(x0: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]: the Bernoulli likelihood's targets."""
    return (x0 + 1) * 0.5


class VAE(Family):
    Config = VAEConfig
    ema_module_names = ("decoder",)

    def __init__(self, config: VAEConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        self.encoder = ConvEncoder(image_shape, config.latent_dim, config.width,
                                   config.num_classes)
        self.decoder = ConvDecoder(image_shape, config.latent_dim, config.width,
                                   config.num_classes)
        if config.likelihood == "gaussian":
            log_scale = torch.tensor(math.log(config.gaussian_scale))
            if config.use_learned_scale:
                self.log_scale = nn.Parameter(log_scale)
            else:
                self.register_buffer("log_scale", log_scale)
        # A buffer, so checkpoints and exact resumption carry the KL warm-up's position.
        self.register_buffer("num_steps_taken", torch.zeros((), dtype=torch.long))

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"vae": torch.optim.Adam(self.parameters(), lr=train_cfg.lr, betas=train_cfg.betas,
                                        weight_decay=train_cfg.weight_decay, foreach=True)}

    # ------------------------------------------------------------ loss

    def kl_weight(self) -> float:
        """beta, ramped linearly over the first `kl_warmup_steps` steps."""
        warmup = self.config.kl_warmup_steps
        if not warmup:
            return self.config.beta
        return self.config.beta * min(1.0, (int(self.num_steps_taken) + 1) / warmup)

    def neg_log_likelihood(self, outputs: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """-log p(x0 | z) in nats per image, (B,), from the decoder's raw outputs."""
        if self.config.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(outputs, to_unit_range(x0), reduction="none")
        else:
            nll = (0.5 * ((x0 - outputs) * torch.exp(-self.log_scale)).square()
                   + self.log_scale + HALF_LOG_2PI)
        return nll.flatten(1).sum(1)

    def losses(self, x0: torch.Tensor, labels: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction NLL and KL(q(z|x0) || N(0, I)), each (B,) in nats per image."""
        mu, logvar = self.encoder(x0, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation, eq. 10
        recon = self.neg_log_likelihood(self.decoder(z, labels), x0)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)  # appendix B
        return recon, kl

    def train_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
                   ) -> dict[str, float]:
        """One Adam step on the beta-weighted negative ELBO; losses in nats per image."""
        x0, labels = batch
        recon, kl = self.losses(x0, self.batch_labels(labels))
        recon, kl = recon.mean(), kl.mean()
        loss = recon + self.kl_weight() * kl
        optimizer = optimizers["vae"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.num_steps_taken += 1
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    # ------------------------------------------------------------ inference

    def _mean_image(self, outputs: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean, in [-1, 1]."""
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(outputs) * 2 - 1
        return outputs.clamp(-1, 1)

    def _given_labels(self, num: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Labels of given images or codes: ignored when unconditional, required otherwise."""
        if not self.num_classes:
            return None
        if labels is None:
            raise ConfigError("this VAE is conditional: pass the class labels too")
        return self.check_labels(num, labels)

    @torch.no_grad()
    def encode(self, x0: torch.Tensor, labels: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of images x0 (B, C, H, W) in [-1, 1]: mu, logvar, each
        (B, latent_dim). A conditional model needs the images' labels."""
        labels = self._given_labels(x0.shape[0], labels)
        with eval_mode(self.encoder):
            return self.encoder(x0.to(self.device), labels)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean images (B, C, H, W) in [-1, 1] of codes z (B, latent_dim). A conditional
        model needs the classes to decode to."""
        labels = self._given_labels(z.shape[0], labels)
        with eval_mode(self.decoder):
            return self._mean_image(self.decoder(z.to(self.device), labels))

    def reconstruct(self, x0: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] decoded from their posterior means."""
        mu, _ = self.encode(x0, labels)
        return self.decode(mu, labels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def generate_from_latents(self, z: torch.Tensor, *, labels: torch.Tensor | None = None,
                              **_: object) -> torch.Tensor:
        """The decoder's mean image for z ~ N(0, I); sampler settings do not apply."""
        return self._mean_image(self.decoder(z, labels))
