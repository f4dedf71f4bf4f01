"""Hybrid family: a GAN drafts, a truncated diffusion model refines.

The GAN's sample is noised to an intermediate step t0 = strength * T and denoised from
there by a few reverse-diffusion steps (SDEdit, Meng et al., arXiv 2108.01073; the
early-stopped diffusion of ES-DDPM, Lyu et al., arXiv 2205.12524). Because sampling never
starts above t0, the refiner is only trained on t <= t_max = max_strength * T, which is
cheaper than a full DDPM (truncated diffusion, Zheng et al., arXiv 2202.09671).

One run trains both parts on the same batches; `combine` builds a hybrid from an existing
GAN checkpoint and an existing DDPM checkpoint instead. Strength 0 returns the draft exactly.
The refiner's autoguidance guide is the hybrid's (`set_guide`, `keep_guide`): `combine`
carries the DDPM's over, and a run keeps its refiner's early weights (`train.keep_guide_at`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from fashiongen.config import ModelConfig, SampleConfig, TrainConfig, require
from fashiongen.errors import ConfigError
from fashiongen.models.base import Batch, Callback, Family, ImageShape
from fashiongen.models.dcgan import DCGAN, DCGANConfig
from fashiongen.models.ddpm import DDPM, DDPMConfig
from fashiongen.models.gan import GAN
from fashiongen.samplers import timesteps

GAN_FAMILIES: dict[str, type[Family]] = {"dcgan": DCGAN, "gan": GAN}  # the draft's family
REFINER_PREFIX = "refiner."  # the refiner's keys in a hybrid's state dict


@dataclass(frozen=True)
class HybridConfig(ModelConfig):
    name: str = "hybrid"
    gan: ModelConfig = field(default_factory=DCGANConfig)  # [model.gan]: a dcgan or gan config
    refiner: DDPMConfig = field(default_factory=DDPMConfig)  # [model.refiner]
    max_strength: float = 0.5  # the refiner learns t <= max_strength * T only
    refiner_lr: float = 1e-3  # the GAN uses train.lr; a denoiser wants a larger rate

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.gan.name in GAN_FAMILIES,
            f"model.gan.name must be one of {', '.join(GAN_FAMILIES)}",
        )
        require(0 < self.max_strength <= 1, "model.max_strength must lie in (0, 1]")
        require(self.refiner_lr > 0, "model.refiner_lr must be > 0")

    @property
    def t_max(self) -> int:
        return max(1, round(self.max_strength * self.refiner.num_train_timesteps)) - 1


class Hybrid(Family):
    Config = HybridConfig
    ema_module_names = ("gan.generator", "refiner.net")
    # Those of either GAN family (it is chosen by the config, after the class is made).
    training_only_modules = tuple(f"gan.{name}" for name in DCGAN.training_only_modules)
    sampling_fields = DDPM.sampling_fields | {"strength"}
    config: HybridConfig

    def __init__(self, config: HybridConfig, image_shape: ImageShape) -> None:
        super().__init__(config, image_shape)
        gan_cfg = dataclasses.replace(config.gan, num_classes=config.num_classes)
        refiner_cfg = dataclasses.replace(
            config.refiner, num_classes=config.num_classes, t_max=config.t_max
        )
        self.gan = GAN_FAMILIES[gan_cfg.name](gan_cfg, image_shape)
        self.refiner = DDPM(refiner_cfg, image_shape)

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        optimizers = self.gan.make_optimizers(train_cfg)
        refiner_train = dataclasses.replace(train_cfg, lr=self.config.refiner_lr)
        optimizers["refiner"] = self.refiner.make_optimizers(refiner_train)["net"]
        return optimizers

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        losses = self.gan.train_step(batch, optimizers)
        refiner = self.refiner.train_step(batch, {"net": optimizers["refiner"]})
        losses["refiner_loss"] = refiner["loss"]
        return losses

    @property
    def max_strength(self) -> float:
        """The largest strength the refiner was trained for."""
        return self.config.max_strength

    def default_sampling(self) -> SampleConfig:
        """The library's settings, the strength at most `max_strength`, so both parts run."""
        return SampleConfig(strength=min(SampleConfig.strength, self.max_strength))

    def t_start(self, strength: float) -> int:
        """The diffusion step a draft is noised to: strength * T, at most the trained t_max."""
        if not 0 <= strength <= self.config.max_strength:
            raise ConfigError(
                f"sample.strength must lie in 0..{self.config.max_strength} for "
                f"this hybrid (its refiner learned t <= {self.config.t_max})"
            )
        return min(round(strength * self.refiner.num_timesteps), self.config.t_max)

    def num_network_evaluations(self, sampling: SampleConfig) -> int:
        """Generator passes plus refiner passes for one batch of samples."""
        t_start = self.t_start(sampling.strength)
        if t_start == 0:
            return 1
        refining_steps = len(timesteps(self.refiner.schedule, sampling.num_steps, t_start))
        return 1 + refining_steps * (2 if sampling.guide_scale != 1 else 1)

    # ------------------------------------------------------------------ the refiner's guide

    @property
    def guide(self) -> DDPM | None:
        return self.refiner.guide

    @property
    def has_own_guide(self) -> bool:
        return self.refiner.has_own_guide

    def set_guide(self, guide: Family | None) -> None:
        """The refiner's autoguidance guide (`DDPM.set_guide`)."""
        self.refiner.set_guide(guide)

    def keep_guide(self, weights: dict[str, torch.Tensor]) -> None:
        """Freeze the refiner's `weights` as its own guide; a whole hybrid's state dict (what
        `train.keep_guide_at` freezes) gives its refiner's part."""
        if any(key.startswith(REFINER_PREFIX) for key in weights):
            weights = {
                key.removeprefix(REFINER_PREFIX): tensor
                for key, tensor in weights.items()
                if key.startswith(REFINER_PREFIX)
            }
        self.refiner.keep_guide(weights)

    def own_guide_weights(self) -> dict[str, torch.Tensor] | None:
        return self.refiner.own_guide_weights()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The GAN's latent: the refinement noise comes from the generator on top."""
        return self.gan.latent_shape

    def generate_from_latents(
        self,
        z: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Draft with the GAN, then refine from t0 = strength * T with `sampling.sampler`."""
        sampling = sampling or SampleConfig()
        t_start = self.t_start(sampling.strength)
        draft = self.gan.generate_from_latents(z, labels=labels).float()  # fp32 under autocast
        return self.refiner.refine(
            draft, t_start, labels=labels, generator=generator, sampling=sampling, callback=callback
        )


def combine(gan: Family, ddpm: DDPM, *, max_strength: float = 0.5) -> Hybrid:
    """A hybrid made of an already trained GAN family and an already trained DDPM, whose
    autoguidance guide, if it has one, the refiner keeps."""
    if gan.config.name not in GAN_FAMILIES:
        raise ConfigError(
            f"the draft model must be one of {', '.join(GAN_FAMILIES)}, got {gan.config.name}"
        )
    if not isinstance(ddpm, DDPM):
        raise ConfigError(f"the refiner must be a ddpm, got {ddpm.config.name}")
    if tuple(gan.image_shape) != tuple(ddpm.image_shape):
        raise ConfigError(f"image shapes differ: {gan.image_shape} vs {ddpm.image_shape}")
    if gan.num_classes != ddpm.num_classes:
        raise ConfigError("both models must have the same model.num_classes")
    if ddpm.max_timestep + 1 < round(max_strength * ddpm.num_timesteps):
        raise ConfigError(
            f"the DDPM learned t <= {ddpm.max_timestep} only: "
            f"max_strength {max_strength} is too high"
        )
    config = HybridConfig(
        num_classes=gan.num_classes,
        gan=gan.config,
        refiner=dataclasses.replace(ddpm.config, t_max=None),
        max_strength=max_strength,
    )
    hybrid = Hybrid(config, gan.image_shape)
    hybrid.gan.load_state_dict(gan.state_dict())
    hybrid.refiner.load_state_dict(ddpm.state_dict())
    if ddpm.has_own_guide:
        hybrid.keep_guide(ddpm.own_guide_weights())
    elif ddpm.guide is not None:
        hybrid.set_guide(ddpm.guide)
    return hybrid.to(ddpm.device)
