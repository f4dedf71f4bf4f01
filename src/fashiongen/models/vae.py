"""Convolutional VAE family (Kingma & Welling, arXiv 1312.6114), with a beta-VAE KL weight.

A Gaussian posterior q(z|x) from a strided-conv encoder, a standard normal prior, and a
transposed-conv decoder whose likelihood p(x|z) is Bernoulli (BCE on images mapped to
[0, 1]) or Gaussian (fixed scale, or one learned scale as in sigma-VAE, Rybkin et al., arXiv
2006.13202). The loss is the negative ELBO with the KL term weighted by `beta` (Higgins et
al., beta-VAE, ICLR 2017), optionally warmed up linearly from 0 (Bowman et al., arXiv
1511.06349). Networks live in `nets/autoencoder.py`. Conditional when `num_classes > 0`
(labels into encoder and decoder: a CVAE, Sohn et al., NeurIPS 2015).

Samples come from the N(0, I) prior, or (`prior = "fitted"`) from a Gaussian mixture fitted
by EM to the training set's posterior means once training ends (ex-post density estimation,
Ghosh et al., arXiv 1903.12436): decoding codes where the encoder actually put the data
avoids the prior's "holes". A latent z ~ N(0, I) maps to a mixture sample deterministically
(its first coordinate picks the component and is then re-standardised), so seeds,
interpolation and the latent-space tools work the same with either prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fashiongen import precision
from fashiongen.config import ModelConfig, TrainConfig, require
from fashiongen.errors import ConfigError
from fashiongen.images import to_model_range
from fashiongen.models.base import Batch, Family, ImageShape, eval_mode
from fashiongen.nets.autoencoder import ConvDecoder, ConvEncoder

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
PRIOR_RIDGE = 1e-4  # added to every fitted covariance: no component collapses onto a point
ENCODE_BATCH = 2000
MAX_FIT_POINTS = 20_000  # per mixture: about 10 s of EM on one core
CONVERGED = 1e-5  # EM stops when the mean log-likelihood per point gains less than this
UNUSED_LOG_WEIGHT = -1e4  # never drawn; finite so weight checks and float16 copies are happy


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
    prior: Literal["standard", "fitted"] = "standard"  # what samples decode (module docstring)
    prior_components: int = 30  # fitted: Gaussians in the mixture (per class when conditional)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.latent_dim >= 1, "model.latent_dim must be >= 1")
        require(self.width >= 1, "model.width must be >= 1")
        require(self.gaussian_scale > 0, "model.gaussian_scale must be > 0")
        require(self.beta >= 0, "model.beta must be >= 0")
        require(self.kl_warmup_steps >= 0, "model.kl_warmup_steps must be >= 0")
        require(1 <= self.prior_components <= 1000, "model.prior_components must be in 1..1000")


def fit_gaussian_mixture(
    x: torch.Tensor, num_components: int, *, num_iterations: int = 50, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM for a full-covariance Gaussian mixture on points x (N, D), started from a seeded
    random subset of the points: (log-weights (K,), means (K, D), Cholesky factors of the
    covariances (K, D, D)), with K = min(num_components, N). At most MAX_FIT_POINTS points
    are used (a seeded subset); float64, one component at a time (no (N, K, D) temporaries);
    stops early once the likelihood stops rising."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x = x[order[:MAX_FIT_POINTS]].double()  # a seeded subset bounds the time
    n, d = x.shape
    k = min(num_components, n)
    means = x[:k].clone()  # k random points: the subset is shuffled
    ridge = PRIOR_RIDGE * torch.eye(d, dtype=x.dtype)
    spread = torch.cov(x.T).reshape(d, d) if n > 1 else torch.eye(d, dtype=x.dtype)
    tril = torch.linalg.cholesky(spread + ridge).expand(k, d, d).clone()
    log_weights = torch.full((k,), -math.log(k), dtype=x.dtype)
    log_prob = torch.empty(n, k, dtype=x.dtype)
    previous = -math.inf
    for _ in range(num_iterations):
        inverse = torch.linalg.solve_triangular(
            tril, torch.eye(d, dtype=x.dtype).expand(k, d, d), upper=False
        )  # L_j^-1, (K, D, D)
        for j in range(k):  # E step: log N(x | mean_j, L_j L_j^T), whitened by one matmul
            white = x @ inverse[j].T - means[j] @ inverse[j].T
            log_det = tril[j].diagonal().log().sum()
            log_prob[:, j] = -0.5 * white.square().sum(1) - log_det - d * HALF_LOG_2PI
        joint = log_prob + log_weights
        log_likelihood = torch.logsumexp(joint, dim=1).mean().item()
        if log_likelihood - previous < CONVERGED:
            break
        previous = log_likelihood
        resp = joint.softmax(dim=1)  # (N, K)
        counts = resp.sum(0).clamp_min(1e-8)
        log_weights = (counts / n).log()
        means = (resp.T @ x) / counts[:, None]
        for j in range(k):  # M step: each component's weighted covariance
            centred = x - means[j]
            cov = (centred * resp[:, j : j + 1]).T @ centred / counts[j]
            tril[j] = torch.linalg.cholesky(cov + ridge)
    return log_weights.float(), means.float(), tril.float()


def to_unit_range(x0: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]: the Bernoulli likelihood's targets."""
    return (x0 + 1) * 0.5


class VAE(Family):
    Config = VAEConfig
    ema_module_names = ("decoder",)

    def __init__(self, config: VAEConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        self.encoder = ConvEncoder(image_shape, config.latent_dim, config.width, config.num_classes)
        self.decoder = ConvDecoder(image_shape, config.latent_dim, config.width, config.num_classes)
        if config.likelihood == "gaussian":
            log_scale = torch.tensor(math.log(config.gaussian_scale))
            if config.use_learned_scale:
                self.log_scale = nn.Parameter(log_scale)
            else:
                self.register_buffer("log_scale", log_scale)
        # A buffer, so checkpoints and exact resumption carry the KL warm-up's position.
        self.register_buffer("num_steps_taken", torch.zeros((), dtype=torch.long))
        if config.prior == "fitted":  # filled by fit_prior; until then samples use N(0, I)
            groups, k, d = max(1, config.num_classes), config.prior_components, config.latent_dim
            self.register_buffer("prior_is_fitted", torch.zeros((), dtype=torch.bool))
            self.register_buffer("prior_log_weights", torch.zeros(groups, k))
            self.register_buffer("prior_means", torch.zeros(groups, k, d))
            self.register_buffer("prior_scale_tril", torch.eye(d).expand(groups, k, d, d).clone())

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {
            "vae": torch.optim.Adam(
                self.parameters(),
                lr=train_cfg.lr,
                betas=train_cfg.betas,
                weight_decay=train_cfg.weight_decay,
                foreach=True,
            )
        }

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
            nll = (
                0.5 * ((x0 - outputs) * torch.exp(-self.log_scale)).square()
                + self.log_scale
                + HALF_LOG_2PI
            )
        return nll.flatten(1).sum(1)

    def losses(
        self, x0: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction NLL and KL(q(z|x0) || N(0, I)), each (B,) in nats per image."""
        # fp32 out of the networks (bf16 under autocast: fashiongen.precision): KL and NLL in fp32
        mu, logvar = (v.float() for v in self.encoder(x0, labels))
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation, eq. 10
        recon = self.neg_log_likelihood(self.decoder(z, labels).float(), x0)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)  # appendix B
        return recon, kl

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
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

    # ------------------------------------------------------------ fitted prior

    def finish_training(self, images: torch.Tensor, labels: torch.Tensor) -> bool:
        if self.config.prior != "fitted":
            return False
        self.fit_prior(images, labels)
        return True

    @torch.no_grad()
    def fit_prior(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit the mixture prior to the posterior means of uint8 training images (N, C, H, W)
        with their labels (one mixture per class when conditional)."""
        labels = labels.to(self.device)
        given = self.batch_labels(labels)
        codes = torch.cat(
            [
                self.encode(
                    to_model_range(images[i : i + ENCODE_BATCH].to(self.device)),
                    None if given is None else given[i : i + ENCODE_BATCH],
                )[0]
                for i in range(0, len(images), ENCODE_BATCH)
            ]
        ).cpu()
        groups = labels.cpu() if self.num_classes else torch.zeros(len(codes), dtype=torch.long)
        self.prior_log_weights.fill_(UNUSED_LOG_WEIGHT)  # components a small class cannot fill
        for g in range(self.prior_log_weights.shape[0]):
            members = codes[groups == g]
            if len(members):
                log_w, means, tril = fit_gaussian_mixture(members, self.config.prior_components)
            else:  # a class absent from the training set keeps the N(0, I) prior
                d = codes.shape[1]
                log_w, means, tril = torch.zeros(1), torch.zeros(1, d), torch.eye(d)[None]
            k = len(log_w)
            self.prior_log_weights[g, :k] = log_w.to(self.device)
            self.prior_means[g, :k] = means.to(self.device)
            self.prior_scale_tril[g, :k] = tril.to(self.device)
        self.prior_is_fitted.fill_(True)

    def prior_codes(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Map z ~ N(0, I) (B, D) to codes from the fitted mixture: Phi(z_1) picks the
        component by its cumulative weight, the position within that slice becomes a fresh
        uniform, so the re-standardised z_1 stays N(0, 1) and independent of the choice."""
        group = (
            labels if labels is not None else torch.zeros(len(z), dtype=torch.long, device=z.device)
        )
        weights = self.prior_log_weights[group].softmax(dim=1)  # (B, K)
        upper = weights.cumsum(dim=1)
        u = torch.special.ndtr(z[:, 0]).clamp(1e-7, 1 - 1e-7)
        k = torch.searchsorted(upper, u[:, None]).clamp(max=weights.shape[1] - 1)
        chosen = weights.gather(1, k).squeeze(1)
        within = ((u - (upper.gather(1, k).squeeze(1) - chosen)) / chosen).clamp(1e-7, 1 - 1e-7)
        z = torch.cat([torch.special.ndtri(within)[:, None], z[:, 1:]], dim=1)
        k = k.squeeze(1)
        means, tril = self.prior_means[group, k], self.prior_scale_tril[group, k]
        return means + (tril @ z[:, :, None]).squeeze(2)

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
    def encode(
        self, x0: torch.Tensor, labels: torch.Tensor | None = None
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

    def generate_from_latents(
        self, z: torch.Tensor, *, labels: torch.Tensor | None = None, **_: object
    ) -> torch.Tensor:
        """The decoder's mean image for z ~ N(0, I) (mapped through the fitted prior when
        there is one); sampler settings do not apply."""
        if self.config.prior == "fitted" and bool(self.prior_is_fitted):
            with precision.full_precision(z.device):  # the mixture's matmul in fp32
                z = self.prior_codes(z, labels)
        return self._mean_image(self.decoder(z, labels).float())
