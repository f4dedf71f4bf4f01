"""DDPM family: a U-Net trained to denoise (Ho et al., arXiv 2006.11239), sampled by any sampler.

Training draws t uniformly, noises x0 with the schedule (`linear` or `cosine`, Nichol &
Dhariwal arXiv 2102.09672) and regresses the network output on the noise (`eps`) or on the
velocity (`v`, Salimans & Ho arXiv 2202.00512; well defined even where the cosine schedule
leaves almost no signal). Conditional models drop the label with probability `cond_drop_prob`
and sample with classifier-free guidance (Ho & Salimans, arXiv 2207.12598), the conditional
and unconditional outputs computed in one batched call. `denoise` turns the network output
into an x0 prediction, the one thing the samplers in `fashiongen.samplers` call; `refine`
noises a given draft to an intermediate step and denoises it from there (SDEdit, Meng et al.,
arXiv 2108.01073), which the hybrid family uses. `t_max` trains a truncated refiner that only
ever sees t <= t_max. Autoguidance (Karras et al., arXiv 2406.02507) steers each x0
prediction away from a weaker guide's, a DDPM of the same task held beside the network
(`set_guide`), often the run's own early weights (`keep_guide`, `train.keep_guide_at`), which
its checkpoints then hold; `sample.guide_scale` weighs it, at one more network call a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from fashiongen.config import ModelConfig, SampleConfig, TrainConfig, require
from fashiongen.errors import ConfigError
from fashiongen.models.base import Batch, Family, ImageShape, Student
from fashiongen.nets.unet import UNet
from fashiongen.samplers import Callback, NoiseSchedule, get_sampler
from fashiongen.samplers.guided import autoguided

MAX_GRAD_NORM = 1.0
MAX_LEVELS = 4
AUTOGUIDANCE_FIELDS = frozenset({"guide", "guide_scale"})


@dataclass(frozen=True)
class DDPMConfig(ModelConfig):
    name: str = "ddpm"
    schedule: Literal["linear", "cosine"] = "cosine"
    prediction: Literal["eps", "v"] = "v"
    num_train_timesteps: int = 1000
    t_max: int | None = None  # train on t <= t_max only (a truncated refiner for the hybrid)
    base_width: int = 32  # U-Net channels at the first level, doubling per level
    num_levels: int = 2  # resolution levels: num_levels - 1 downsamplings
    num_res_blocks: int = 1
    use_attention: bool = False  # self-attention at the lowest resolution
    use_unshuffle: bool = True  # 2x2 pixel-unshuffle stem: the U-Net runs at half resolution
    cond_drop_prob: float = 0.1  # classifier-free guidance: p(label -> null) in training
    # Which t a training step sees: "uniform" over 0..max_timestep, or EDM's "lognormal"
    # noise levels, ln(sigma) ~ N(mean, std) with sigma^2 = (1 - abar) / abar (Karras et
    # al., arXiv 2206.00364, sec. 5), mapped to the nearest t.
    timestep_sampling: Literal["uniform", "lognormal"] = "uniform"
    lognormal_mean: float = -0.9
    lognormal_std: float = 1.2
    # How each t's error counts: "none" (plain MSE of the output) or "min_snr", the x0 error
    # weighted by min(SNR, gamma) (Hang et al., arXiv 2303.09556), gamma = min_snr_gamma.
    loss_weighting: Literal["none", "min_snr"] = "none"
    min_snr_gamma: float = 5.0
    # TrainConfig.betas default to a GAN's (0.5, 0.999); a denoiser wants Adam's usual ones
    optimizer_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_train_timesteps >= 2, "model.num_train_timesteps must be >= 2")
        require(
            self.t_max is None or 0 <= self.t_max < self.num_train_timesteps,
            "model.t_max must lie in 0..num_train_timesteps-1",
        )
        require(self.base_width >= 1, "model.base_width must be >= 1")
        require(1 <= self.num_levels <= MAX_LEVELS, f"model.num_levels must be in 1..{MAX_LEVELS}")
        require(self.num_res_blocks >= 1, "model.num_res_blocks must be >= 1")
        require(0 <= self.cond_drop_prob < 1, "model.cond_drop_prob must lie in [0, 1)")
        require(self.lognormal_std > 0, "model.lognormal_std must be > 0")
        require(self.min_snr_gamma > 0, "model.min_snr_gamma must be > 0")
        require(
            all(0 <= b < 1 for b in self.optimizer_betas),
            "model.optimizer_betas must lie in [0, 1)",
        )

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.base_width * 2**level for level in range(self.num_levels))


class DDPM(Family):
    Config = DDPMConfig
    ema_module_names = ("net",)
    sampling_fields = frozenset({"sampler", "num_steps", "eta", "guidance_scale"}) | (
        AUTOGUIDANCE_FIELDS
    )
    clip_x0: ClassVar[bool] = True  # `denoise` clamps its x0 prediction to [-1, 1]
    config: DDPMConfig
    # autoguidance's weaker model (`set_guide`); held outside the module tree, so it is
    # never part of this model's weights, optimizer or `.to()`
    guide: DDPM | None = None
    has_own_guide: bool = False  # the guide came from this run (`keep_guide`)

    def __init__(self, config: DDPMConfig, image_shape: ImageShape) -> None:
        if not isinstance(config, DDPMConfig):
            raise ConfigError(f"the ddpm family needs a DDPMConfig, got {type(config).__name__}")
        super().__init__(config, image_shape)
        self.net = UNet(
            image_shape[0],
            config.widths,
            num_res_blocks=config.num_res_blocks,
            use_attention=config.use_attention,
            use_unshuffle=config.use_unshuffle,
            num_classes=config.num_classes,
        )
        self.schedule = NoiseSchedule(config.schedule, config.num_train_timesteps)

    @property
    def num_timesteps(self) -> int:
        return self.config.num_train_timesteps

    @property
    def max_timestep(self) -> int:
        """The largest t the network is trained on."""
        t_max = self.config.t_max
        return self.num_timesteps - 1 if t_max is None else t_max

    # ------------------------------------------------------------------ training

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        fused = self.device.type in ("cuda", "cpu")
        return {
            "net": torch.optim.AdamW(
                self.net.parameters(),
                lr=train_cfg.lr,
                betas=self.config.optimizer_betas,
                weight_decay=train_cfg.weight_decay,
                fused=fused,
                foreach=None if fused else True,
            )
        }

    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """MSE between the network output and its target at t <= max_timestep drawn by
        `timestep_sampling`, each sample weighted by `loss_weighting`."""
        t = self.training_timesteps(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, eps)
        if labels is not None and self.config.cond_drop_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.config.cond_drop_prob
            labels = torch.where(drop, self.net.null_label, labels)
        output = self.net(x_t, t, labels)
        target = self.schedule.target(x0, eps, t, self.config.prediction)
        if self.config.loss_weighting == "none":
            return F.mse_loss(output.float(), target)
        per_sample = (output.float() - target).pow(2).flatten(1).mean(1)
        return (per_sample * self.min_snr_weights(t)).mean()

    def training_timesteps(self, n: int, device: torch.device) -> torch.Tensor:
        """(n,) int64 timesteps in 0..max_timestep, as `timestep_sampling` says."""
        if self.config.timestep_sampling == "uniform":
            return torch.randint(0, self.max_timestep + 1, (n,), device=device)
        log_sigma = self.config.lognormal_mean + self.config.lognormal_std * torch.randn(n)
        abar = torch.sigmoid(-2 * log_sigma)  # 1 / (1 + sigma^2)
        # alphas_cumprod falls with t: the nearest t from below or above
        table = self.schedule.alphas_cumprod[: self.max_timestep + 1].float().cpu()
        t = torch.searchsorted(-table, -abar).clamp(max=self.max_timestep)
        below = (t - 1).clamp(min=0)
        closer_below = (table[below] - abar).abs() < (table[t] - abar).abs()
        return torch.where(closer_below, below, t).to(device)

    def min_snr_weights(self, t: torch.Tensor) -> torch.Tensor:
        """min(SNR, gamma) on the x0 error, expressed on this parametrisation's error."""
        snr = self.schedule.snr(t)
        weight = snr.clamp(max=self.config.min_snr_gamma)
        per_output = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}
        return weight / per_output[self.config.prediction]

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        x0, labels = batch
        optimizer = optimizers["net"]
        loss = self.loss(x0, self.batch_labels(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        return {"loss": loss.item()}

    # ------------------------------------------------------------------ sampling

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """The x0 prediction, clamped to [-1, 1] (Ho et al.'s clipping; unless `clip_x0` is
        off), for x_t at steps t.

        Args:
            x_t: (B, C, H, W) noised images.
            t: (B,) int64 timesteps.
            labels: (B,) class ids, or None for the null class (unconditional).
            guidance_scale: classifier-free guidance weight w: out_uncond + w (out_cond -
                out_uncond); 1 = plain conditional.

        Returns:
            x0_pred, (B, C, H, W) in [-1, 1].
        """
        # The network's output in fp32 (bf16 under autocast: fashiongen.precision), so the
        # guidance and the schedule's arithmetic are fp32.
        if labels is None or guidance_scale == 1.0:
            output = self.net(x_t, t, labels).float()
        else:
            null = torch.full_like(labels, self.net.null_label)
            cond, uncond = (
                self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
                .float()
                .chunk(2)
            )
            output = uncond + guidance_scale * (cond - uncond)
        x0 = self.schedule.to_x0(x_t, t, output, self.config.prediction)
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def set_guide(self, guide: Family | None) -> None:
        """Attach the weaker model that autoguidance (`sample.guide_scale` != 1) steers away
        from, e.g. this run's own early checkpoint; None detaches it. It must be a DDPM of the
        same images, classes and noise schedule."""
        if guide is not None:
            problem = self._guide_problem(guide)
            if problem:
                raise ConfigError(f"cannot guide this DDPM with that model: {problem}")
        object.__setattr__(self, "guide", guide)  # not nn.Module's: no submodule
        object.__setattr__(self, "has_own_guide", False)

    def keep_guide(self, weights: dict[str, torch.Tensor]) -> None:
        """Freeze `weights`, a state dict of this model (its EMA weights early in a run:
        `train.keep_guide_at`), as its own guide, which its checkpoints then hold."""
        with torch.random.fork_rng(devices=[]):  # building draws no training noise
            guide = DDPM(self.config, self.image_shape)
        guide.load_state_dict(weights)
        guide.requires_grad_(False)
        self.set_guide(guide.to(self.device).eval())
        object.__setattr__(self, "has_own_guide", True)

    def own_guide_weights(self) -> dict[str, torch.Tensor] | None:
        """The state dict of the guide `keep_guide` froze (None without one)."""
        return self.guide.state_dict() if self.guide is not None and self.has_own_guide else None

    def _guide_problem(self, guide: Family) -> str:
        if not isinstance(guide, DDPM) or isinstance(guide, Student):
            return f"the guide must be a DDPM, not a {type(guide).__name__.lower()}"
        mine, theirs = self.config, guide.config
        for what, a, b in (
            ("image shape", tuple(self.image_shape), tuple(guide.image_shape)),
            ("number of classes", mine.num_classes, theirs.num_classes),
            ("noise schedule", mine.schedule, theirs.schedule),
            ("number of timesteps", mine.num_train_timesteps, theirs.num_train_timesteps),
        ):
            if a != b:
                return f"its {what} is {b}, this model's {a}"
        if guide.max_timestep < self.max_timestep:
            return f"it was trained on t <= {guide.max_timestep} only"
        return ""

    def num_network_evaluations(self, sampling: SampleConfig) -> int:
        """One call a step, two with autoguidance (the guide's)."""
        return sampling.num_steps * (2 if sampling.guide_scale != 1 else 1)

    def sampling_denoiser(self, labels: torch.Tensor | None, sampling: SampleConfig):
        """The (x_t, t) -> x0 function the samplers call: classifier-free guidance, and
        autoguidance when `sampling.guide_scale` != 1 (the guide with the same labels and
        classifier-free guidance)."""
        denoise = partial(self.denoise, labels=labels, guidance_scale=sampling.guidance_scale)
        if sampling.guide_scale == 1:
            return denoise
        if self.guide is None:
            raise ConfigError(
                f"sample.guide_scale is {sampling.guide_scale:g} but this model has no guide: "
                "name one with sample.guide (sample --guide NAME|PATH)"
            )
        guide = self.guide.to(self.device).eval()
        weaker = partial(guide.denoise, labels=labels, guidance_scale=sampling.guidance_scale)
        return autoguided(denoise, weaker, sampling.guide_scale, clip=self.clip_x0)

    def _run_sampler(
        self,
        x_start: torch.Tensor,
        t_start: int,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        sampling: SampleConfig,
        callback: Callback | None,
    ) -> torch.Tensor:
        sampler = get_sampler(sampling.sampler)
        denoise = self.sampling_denoiser(labels, sampling)
        was_training = self.training
        self.eval()
        try:
            x0 = sampler(
                denoise,
                x_start,
                self.schedule,
                num_steps=sampling.num_steps,
                t_start=t_start,
                eta=sampling.eta,
                generator=generator,
                callback=callback,
            )
        finally:
            self.train(was_training)
        return x0.clamp(-1, 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The starting noise x_T has the images' shape."""
        return tuple(self.image_shape)

    def generate_from_latents(
        self,
        z: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampling: SampleConfig | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Run `sampling.sampler` from x_T = z at t = T-1 (num_steps, eta, guidance_scale).

        A deterministic sampler (DDIM with eta 0, DPM-Solver++) maps each z to one image,
        so interpolating z interpolates images. (A truncated refiner, t_max < T-1, was never
        trained from pure noise: use `refine`.)
        """
        return self._run_sampler(
            z, self.num_timesteps - 1, labels, generator, sampling or SampleConfig(), callback
        )

    @torch.no_grad()
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
        """Noise a draft to x_{t_start} with q_sample, then sample from t_start (SDEdit).

        Args:
            x0_draft: (B, C, H, W) images in [-1, 1], e.g. a GAN's samples.
            t_start: 0..t_max; 0 returns the draft unchanged (strength 0), since the noise
                at t = 0 is below a grey level.
            labels: (B,) the drafts' classes, or None for the null class (unconditional).
            generator: feeds the noise and the sampler's fresh noise.
            sampling: the sampler, its num_steps (at most t_start + 1 network evaluations),
                eta and guidance_scale.
            callback: progress, as in `sample`.

        Returns:
            (B, C, H, W) in [-1, 1].
        """
        if not 0 <= t_start <= self.max_timestep:
            raise ConfigError(
                f"refine: t_start must lie in 0..{self.max_timestep} (the "
                f"timesteps this model was trained on), got {t_start}"
            )
        sampling = sampling or SampleConfig()
        get_sampler(sampling.sampler)
        if t_start == 0:
            return x0_draft
        num_samples = x0_draft.shape[0]
        if labels is not None:
            labels = self.check_labels(num_samples, labels, generator)
        x0_draft = x0_draft.to(self.device)
        eps = self.randn(*x0_draft.shape, generator=generator)
        t = torch.full((num_samples,), t_start, dtype=torch.long, device=self.device)
        x_start = self.schedule.q_sample(x0_draft, t, eps)
        return self._run_sampler(x_start, t_start, labels, generator, sampling, callback)
