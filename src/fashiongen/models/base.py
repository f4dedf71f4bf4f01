"""The one interface between model families and everything else.

Every family (`gan`, `dcgan`, `vae`, `ddpm`, `hybrid`) is an `nn.Module` with a config
dataclass. What the code around the families may use is written down here and nowhere
else: a training side (`Trainable`: the training loop, checkpoints, EMA, distributed
training) and a sampling side (`Samplable`: generation, export, visuals, reports, the web
page and the API), together `GenerativeModel`. What only some families can do is a
capability protocol, checked with `isinstance` (never by probing for attributes or by
family name): `Autoencoder` (the VAE's encode/decode/reconstruct), `Diffusion` (a diffusion
family's x0 prediction, which every sampler calls), `DraftRefiner` (the hybrid: a draft
noised to a `strength` and refined by a denoiser) and `Student` (a distilled DDPM, trained
from a teacher). So nothing outside `models/` ever says
`if model == "gan"`.

Tensor glossary, used throughout the package:
  x0      clean images, float (B, C, H, W) in [-1, 1]
  x_t     images noised to diffusion timestep t
  t       integer timesteps (B,) in [0, T-1]
  eps     Gaussian noise, the same shape as x0
  z       latent codes (B, latent_dim)
  mu, logvar   a VAE posterior's mean and log-variance
  logits  unnormalised scores (a discriminator's, or a classifier's)
  labels  class ids (B,) int64 in [0, num_classes)
  losses  what `train_step` returns: {name: float}, the same keys at every step. A key
          starting with `event_` is not a loss but a 0/1 mark of something
          that happened at this step (e.g. `event_d_reversion`: D was reverted); the
          metrics log counts such keys instead of averaging them, the loss plot draws them
          as vertical lines, and distributed training takes rank 0's value (whose state
          wins) instead of the mean over ranks.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from fashiongen import precision
from fashiongen.config import ModelConfig, SampleConfig, TrainConfig
from fashiongen.errors import ConfigError
from fashiongen.samplers import Callback, NoiseSchedule  # callback(step_index, num_steps)

Batch = tuple[torch.Tensor, torch.Tensor]  # x0 (B, C, H, W) in [-1, 1], labels (B,) int64
ImageShape = tuple[int, int, int]  # (C, H, W)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put `module` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@runtime_checkable
class Trainable(Protocol):
    """The training side: what the training loop, checkpoints, EMA and distributed
    training use."""

    Config: ClassVar[type[ModelConfig]]
    config: ModelConfig
    # Submodules whose exponential moving average is used for sampling (e.g. the generator).
    ema_module_names: ClassVar[tuple[str, ...]]
    # Submodules only training needs (a GAN's adversary): sampling-only files leave them out.
    training_only_modules: ClassVar[tuple[str, ...]]

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """The optimizers `train_step` steps, keyed by name (saved and resumed by the loop)."""
        ...

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        """One full optimisation step (a GAN's D and G updates included); returns losses
        (`event_` keys: see the glossary)."""
        ...

    def finish_training(self, images: torch.Tensor, labels: torch.Tensor) -> bool:
        """Once training ends: fit what depends on the whole training set; True if done."""
        ...

    def compile_networks(self) -> list[str]:
        """`torch.compile` the networks in place; returns their names."""
        ...

    @classmethod
    def needed_for_sampling(cls, key: str) -> bool:
        """False for a state-dict key of a training-only module."""
        ...


@runtime_checkable
class Samplable(Protocol):
    """The sampling side: what generation, export, visuals, reports, the web page and the
    API use."""

    config: ModelConfig
    image_shape: ImageShape
    # The SampleConfig fields `sample` heeds (diffusion families); the others ignore it.
    sampling_fields: ClassVar[frozenset[str]]
    # The sampling settings of the checkpoint the model was loaded from; None when built here.
    checkpoint_sampling: SampleConfig | None

    @property
    def num_classes(self) -> int:
        """0 for an unconditional model."""
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent code (without the batch dimension)."""
        ...

    def sample(
        self,
        num_samples: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """(num_samples, C, H, W) float in [-1, 1]; `labels` only for conditional models."""
        ...

    def generate_from_latents(
        self,
        z: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] from latents z (B, *latent_shape)."""
        ...

    def default_sampling(self) -> SampleConfig:
        """The family's default sampling settings (valid for it, every network used)."""
        ...

    def num_network_evaluations(self, sampling: SampleConfig) -> int:
        """Network calls per batch of samples."""
        ...

    def randn(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gaussian noise from `generator`, on the model's device."""
        ...

    def check_labels(
        self,
        num_samples: int,
        labels: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | None:
        """Validated labels (drawn uniformly when None and conditional)."""
        ...


@runtime_checkable
class GenerativeModel(Trainable, Samplable, Protocol):
    """What every family implements: both sides."""


@runtime_checkable
class Autoencoder(Protocol):
    """A family with an encoder and a decoder over a flat latent (the VAE)."""

    def encode(
        self, x0: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of x0 (B, C, H, W) in [-1, 1]: mu, logvar (B, latent_dim)."""
        ...

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean images (B, C, H, W) in [-1, 1] of codes z (B, latent_dim)."""
        ...

    def reconstruct(self, x0: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] decoded from their posterior means."""
        ...


@runtime_checkable
class Diffusion(Protocol):
    """A diffusion family: predicts x0 from x_t, which every sampler in
    `fashiongen.samplers` calls, and refines a given draft from an intermediate step."""

    schedule: NoiseSchedule
    guide: Diffusion | None  # autoguidance's weaker model, if one is attached

    @property
    def num_timesteps(self) -> int: ...

    @property
    def max_timestep(self) -> int:
        """The largest t the network is trained on."""
        ...

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """The x0 prediction (B, C, H, W) in [-1, 1] for x_t at steps t (B,)."""
        ...

    def sampling_denoiser(
        self, labels: torch.Tensor | None, sampling: SampleConfig
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`denoise` as `sampling` asks: classifier-free guidance, and autoguidance when
        `sampling.guide_scale` != 1."""
        ...

    def refine(
        self,
        x0_draft: torch.Tensor,
        t_start: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Noise a draft to x_{t_start}, then sample from t_start (SDEdit)."""
        ...


@runtime_checkable
class DraftRefiner(Protocol):
    """A family that drafts an image in one pass and refines it with a `Diffusion` family from
    t0 = strength * T (the hybrid): `sample.strength` matters to it."""

    refiner: Diffusion

    @property
    def max_strength(self) -> float:
        """The largest strength the refiner was trained for."""
        ...

    def t_start(self, strength: float) -> int:
        """The diffusion step a draft is noised to at `strength`."""
        ...


@runtime_checkable
class Student(Protocol):
    """A family trained from a teacher model (a distilled DDPM): when a fresh run starts,
    the training loop loads the model `teacher_source` names and hands it over."""

    @property
    def teacher_source(self) -> str:
        """A zoo name, run folder or checkpoint."""
        ...

    @property
    def start_source(self) -> str:
        """The model whose weights the student starts from (its teacher unless set)."""
        ...

    def adopt_teacher(self, teacher: Family, start: Family | None = None) -> None:
        """Take the teacher's weights, and `start`'s (None: the teacher's) as the student's
        own (refusing models of another kind)."""
        ...


class Family(nn.Module):
    """Shared plumbing for the families: shapes, labels, noise from an explicit generator.

    A family defines `latent_shape` and `generate_from_latents`; `sample` draws the latents
    from the generator and decodes them. Latents are what a GAN's or VAE's decoder takes, or
    a diffusion model's starting noise x_T, so interpolating between two seeds works the
    same for every family.
    """

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    ema_module_names: ClassVar[tuple[str, ...]] = ()
    training_only_modules: ClassVar[tuple[str, ...]] = ()
    # The SampleConfig fields `sample` heeds (diffusion families); the others ignore it.
    sampling_fields: ClassVar[frozenset[str]] = frozenset()
    # Set by `fashiongen.checkpoint.load_model`; `fashiongen.generate` samples with it when
    # given no settings.
    checkpoint_sampling: SampleConfig | None = None

    def __init__(self, config: ModelConfig, image_shape: ImageShape) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)

    @property
    def device(self) -> torch.device:
        # Sampling networks swapped for onnxruntime ones (fashiongen.export) hold no weights.
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent code (without the batch dimension)."""
        raise NotImplementedError

    def generate_from_latents(
        self,
        z: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] from latents z (B, *latent_shape); called in eval
        mode without gradients. `generator` feeds any further noise (diffusion samplers)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """(num_samples, C, H, W) float in [-1, 1]: latents from `generator`, decoded.

        Args:
            num_samples: how many images.
            labels: (num_samples,) class ids for a conditional model (drawn uniformly when
                None); an unconditional model refuses them.
            generator: the source of all randomness: the same seed gives the same images.
            sampling: sampler settings (diffusion families; the others ignore them).
            callback: progress of iterative samplers, `callback(step_index, num_steps)`.
        """
        labels = self.check_labels(num_samples, labels, generator)
        z = self.randn(num_samples, *self.latent_shape, generator=generator)
        # `sample.precision` / `--precision`: bf16 autocast of the networks (fashiongen.precision)
        with eval_mode(self), precision.sampling_autocast(self, sampling):
            x0 = self.generate_from_latents(
                z, labels=labels, generator=generator, sampling=sampling, callback=callback
            )
        return x0.float().clamp(-1, 1)

    def finish_training(self, images: torch.Tensor, labels: torch.Tensor) -> bool:
        """Called by the training loop once training ends, before the final checkpoint,
        with the whole training set (uint8 images, labels); a family that fits something to
        the data after training (the VAE's fitted prior) does it here and returns True."""
        return False

    def compile_networks(self) -> list[str]:
        """`torch.compile` each network of this family in place (`nn.Module.compile`), so
        parameters, state-dict keys and checkpoints stay as they are; networks of nested
        families (the hybrid's parts) too. Compilation happens lazily at each network's first
        call. Returns the compiled networks' names."""
        compiled = []
        for name, child in self.named_children():
            if isinstance(child, Family):
                compiled += [f"{name}.{inner}" for inner in child.compile_networks()]
            elif any(True for _ in child.parameters()):
                child.compile()
                compiled.append(name)
        return compiled

    @classmethod
    def needed_for_sampling(cls, key: str) -> bool:
        """False for a state-dict key of one of `training_only_modules`."""
        return not any(key.startswith(f"{name}.") for name in cls.training_only_modules)

    def default_sampling(self) -> SampleConfig:
        """The family's default sampling settings: the library's (which the families that
        sample in one pass ignore)."""
        return SampleConfig()

    def num_network_evaluations(self, sampling: SampleConfig) -> int:
        """Network calls per batch of samples: one pass, or one per diffusion step
        (classifier-free guidance's two halves go in one batched call)."""
        return sampling.num_steps if "num_steps" in self.sampling_fields else 1

    def randn(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gaussian noise drawn on the generator's device (CPU by default), then moved:
        the same seed gives the same samples on every device."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(*shape, generator=generator, device=gen_device).to(self.device)

    def check_labels(
        self,
        num_samples: int,
        labels: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | None:
        """Validate requested labels; a conditional model given none draws them uniformly."""
        if not self.num_classes:
            if labels is not None:
                raise ConfigError("this model is unconditional: it cannot sample given classes")
            return None
        if labels is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            labels = torch.randint(
                self.num_classes, (num_samples,), generator=generator, device=gen_device
            )
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if labels.numel() != num_samples:
            raise ConfigError(f"got {labels.numel()} labels for {num_samples} samples")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(f"labels must lie in 0..{self.num_classes - 1}")
        return labels.to(self.device)

    def batch_labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Training labels, or None for an unconditional model."""
        return labels if self.num_classes else None
