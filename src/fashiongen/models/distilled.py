"""Distilled DDPM: a student that samples in K network calls, guidance folded in.

The student is a DDPM (the same U-Net and schedule) initialised from its teacher and trained
so that K deterministic DDIM steps on its own grid, `timesteps(schedule, K)`, land where the
teacher's sampler lands after its own `teacher_steps` steps: progressive distillation
(Salimans & Ho, arXiv 2202.00512) taken in one jump per segment instead of halving. For a
state x at student step t_k, the teacher walks its own grid from x down to the next student
step (`samplers.WALKS`: its sampler, with its classifier-free guidance, as in Meng et al.'s
guided distillation, arXiv 2210.03142), and the student's x0 is regressed on the x0 that
makes one DDIM step from x reproduce the teacher's state there (on the last segment, on the
teacher's image), weighted by max(SNR, 1) as Salimans & Ho do. The teacher's grid holds the
student's whenever K divides `teacher_steps` (trailing spacing), so every segment is a
stretch of the teacher's own sampling path. A guided teacher's doubled batch becomes one
call of the student; a student is itself a valid teacher, so K = 4 can be halved again.

Where the states x come from is `student_inputs`: the student's own sampling path from fresh
noise (the default; it then trains on exactly the states it meets when it samples), the
teacher's path, or real images noised to t_k (progressive distillation's inputs). Measured
on the zoo DDPM (docs/results/distillation), the paths beat noised data and the student's
own path is best by a little.

Why this and not consistency distillation (arXiv 2303.01469) or consistency tuning
(locuslab/ect): both learn a map from every t to the clean image and report on the order of
10^5 steps; a segment target is a deterministic function of x (the teacher's ODE), so plain
regression gets most of the way in a few thousand steps on this CPU.

With `adversarial_weight` > 0 the student is also a generator under a discriminator: its
K-call images from fresh noise (the gradient through all K calls) are scored against real
images of the same classes by a conditional DCGAN discriminator with R3GAN's objective (the
relativistic pairing loss and lazy R1 + R2, as the zoo's DCGAN trains), the regression on
the teacher kept as the anchor; adversarial distillation in the manner of ADD (Sauer et
al., arXiv 2311.17042) and DMD2 (Yin et al., arXiv 2405.14867), whose GAN term lets a
few-step student draw what the regression averages away. `start_from` starts the student
from another model's weights (an already distilled student, to fine-tune it so).

The teacher is a frozen submodule (`training_only_modules`), loaded from `config.teacher`
when a fresh run starts (`adopt_teacher`) and saved in training checkpoints, so a resumed
run continues exactly whatever has happened to the teacher's file since.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch

from fashiongen.config import (
    SAMPLER_NAMES,
    WRITTEN_UNLESS_DEFAULT,
    SampleConfig,
    TrainConfig,
    require,
)
from fashiongen.errors import ConfigError
from fashiongen.limits import MAX_GUIDANCE_SCALE, MAX_SAMPLING_STEPS
from fashiongen.models.adversarial import (
    AdversarialConfig,
    discriminator_update,
    optimizer_step_count,
    scored_by,
)
from fashiongen.models.base import Batch, Callback, Family, ImageShape
from fashiongen.models.ddpm import DDPM, MAX_GRAD_NORM, DDPMConfig
from fashiongen.nets.conv import ConvDiscriminator
from fashiongen.samplers import ddim_walk, get_walk, timesteps

NO_GUIDE = (
    "a distilled student samples in its own few calls and takes no guide: "
    "distil from a guided teacher instead"
)
ARCHITECTURE_FIELDS = tuple(f.name for f in dataclasses.fields(DDPMConfig) if f.name != "name")
# The discriminator of adversarial distillation: the zoo DCGAN's, with its objective
# (configs/dcgan.toml: R3GAN's relativistic loss, R1 = R2 = 0.1 every 4th D step, Adam
# with beta1 = 0).
D_WIDTH = 64
D_OBJECTIVE = AdversarialConfig(
    loss="relativistic", r1_gamma=0.1, r2_gamma=0.1, reg_every_n_steps=4
)
D_BETAS = (0.0, 0.99)


@dataclass(frozen=True)
class DistilledConfig(DDPMConfig):
    name: str = "distilled"
    steps: int = 4  # the student's network calls per image
    teacher: str = ""  # zoo name, run folder or checkpoint; read when training starts
    teacher_sampler: str = "dpmpp_2m"  # the teacher's own sampling settings
    teacher_steps: int = 20
    teacher_guidance: float = 1.5
    teacher_clips_x0: bool = True  # a DDPM clamps its x0 predictions; a student does not
    # the teacher's autoguidance (its `sample.guide_scale`, by its guide: `teacher_guide`)
    teacher_guide_scale: float = field(default=1.0, metadata=WRITTEN_UNLESS_DEFAULT)
    # The student's training inputs: real images noised to a student step ("noised_data",
    # progressive distillation's), the states of the teacher's own sampling path from fresh
    # noise ("teacher_path"), or the student's own path ("student_path": its own DDIM steps
    # from fresh noise, the teacher walking each segment from where the student is, so it
    # learns on the states it meets when it samples); docs/results/distillation compares them.
    student_inputs: Literal["noised_data", "teacher_path", "student_path"] = "student_path"
    # The weight of the adversarial term (0: plain distillation, no discriminator).
    adversarial_weight: float = field(default=0.0, metadata=WRITTEN_UNLESS_DEFAULT)
    # The weights the student starts from: "" for the teacher's, else a zoo name, run folder
    # or checkpoint of a model of the teacher's network (an already distilled student).
    start_from: str = field(default="", metadata=WRITTEN_UNLESS_DEFAULT)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 1, "model.steps must be >= 1")
        require(
            1 <= self.teacher_steps <= MAX_SAMPLING_STEPS,
            f"model.teacher_steps must be between 1 and {MAX_SAMPLING_STEPS}",
        )
        require(
            self.teacher_steps % self.steps == 0,
            f"model.teacher_steps ({self.teacher_steps}) must be a multiple of model.steps "
            f"({self.steps}), so each student step covers whole teacher steps",
        )
        require(
            self.teacher_sampler in SAMPLER_NAMES,
            f"model.teacher_sampler must be one of: {', '.join(SAMPLER_NAMES)}",
        )
        require(
            0 <= self.adversarial_weight <= 100, "model.adversarial_weight must lie in [0, 100]"
        )
        for name in ("teacher_guidance", "teacher_guide_scale"):
            require(
                0 <= getattr(self, name) <= MAX_GUIDANCE_SCALE,
                f"model.{name} must lie in [0, {MAX_GUIDANCE_SCALE}]",
            )

    def teacher_architecture(self) -> DDPMConfig:
        """The teacher's network config: the student's own (it starts as a copy)."""
        return DDPMConfig(**{name: getattr(self, name) for name in ARCHITECTURE_FIELDS})


def student_config(
    teacher: DDPMConfig, sampling: SampleConfig, *, steps: int, source: str
) -> DistilledConfig:
    """The config of a `steps`-call student of a DDPM (or distilled) teacher that samples
    with `sampling`; `source` is how to find the teacher again (zoo name or path)."""
    return DistilledConfig(
        **{name: getattr(teacher, name) for name in ARCHITECTURE_FIELDS},
        steps=steps,
        teacher=source,
        teacher_sampler=sampling.sampler,
        teacher_steps=sampling.num_steps,
        teacher_guidance=sampling.guidance_scale if teacher.num_classes else 1.0,
        teacher_clips_x0=not isinstance(teacher, DistilledConfig),
        teacher_guide_scale=sampling.guide_scale,
    )


class Distilled(DDPM):
    Config = DistilledConfig
    training_only_modules = ("teacher", "teacher_guide", "discriminator")
    # Samples in exactly its K calls whatever a SampleConfig says, as a GAN samples in one.
    sampling_fields = frozenset()
    # Its x0 predictions on the way are DDIM jump targets, which leave [-1, 1]; clamping them
    # moved its 4-step images off the teacher's (FID 2.55 clamped, 2.43 not); the image it
    # returns is clamped.
    clip_x0 = False
    config: DistilledConfig

    def __init__(self, config: DistilledConfig, image_shape: ImageShape) -> None:
        if not isinstance(config, DistilledConfig):
            raise ConfigError(
                f"the distilled family needs a DistilledConfig, got {type(config).__name__}"
            )
        super().__init__(config, image_shape)
        self.teacher = DDPM(config.teacher_architecture(), image_shape)
        self.teacher.clip_x0 = config.teacher_clips_x0  # it samples as it did
        self.teacher.requires_grad_(False)
        if config.teacher_guide_scale != 1:  # a frozen copy of the teacher's guide
            self.teacher_guide = DDPM(config.teacher_architecture(), image_shape)
            self.teacher_guide.requires_grad_(False)
            self.teacher.set_guide(self.teacher_guide)
        if config.adversarial_weight:
            self.discriminator = ConvDiscriminator(
                image_shape,
                D_WIDTH,
                dropout=0.0,
                num_classes=config.num_classes,
                use_minibatch_std=False,
            )

    @property
    def teacher_source(self) -> str:
        return self.config.teacher

    @property
    def start_source(self) -> str:
        return self.config.start_from or self.config.teacher

    def adopt_teacher(self, teacher: Family, start: Family | None = None) -> None:
        """Copy the teacher's (sampling) weights into the frozen teacher, and `start`'s
        (the teacher's when None) into the student."""
        shapes = {k: v.shape for k, v in self.teacher.net.state_dict().items()}
        for role, model, source in (
            ("teacher", teacher, self.config.teacher),
            ("start", start or teacher, self.start_source),
        ):
            if not isinstance(model, DDPM):
                raise ConfigError(
                    f"distillation needs a DDPM {role}, got a {type(model).__name__.lower()}"
                )
            if {k: v.shape for k, v in model.net.state_dict().items()} != shapes:
                raise ConfigError(
                    f"the {role} {source!r} is not the network this student was configured "
                    "for (distil it again with `fashiongen distill`)"
                )
        self.teacher.net.load_state_dict(teacher.net.state_dict())
        self.net.load_state_dict((start or teacher).net.state_dict())
        if self.config.teacher_guide_scale != 1:
            guide = teacher.guide
            if guide is None or {k: v.shape for k, v in guide.net.state_dict().items()} != shapes:
                raise ConfigError(
                    f"the teacher {self.config.teacher!r} samples with autoguidance but has "
                    "no guide of its own network to distil with"
                )
            self.teacher_guide.net.load_state_dict(guide.net.state_dict())

    # ------------------------------------------------------------------ training

    def make_optimizers(self, train_cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        optimizers = super().make_optimizers(train_cfg)
        if self.config.adversarial_weight:
            optimizers["discriminator"] = torch.optim.Adam(
                self.discriminator.parameters(), lr=train_cfg.lr, betas=D_BETAS, foreach=True
            )
        return optimizers

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, float]:
        """The regression on the teacher (`loss`), plus, with `adversarial_weight`, one D
        update and the student's adversarial loss on its K-call images (`g_loss`)."""
        if not self.config.adversarial_weight:
            return super().train_step(batch, optimizers)
        x0, labels = batch
        labels = self.batch_labels(labels)
        distill_loss = self.loss(x0, labels)
        n = max(1, x0.shape[0] // self.config.steps)  # as many images as paths
        real, labels = x0[:n], None if labels is None else labels[:n]
        fake = self._images_with_grad(torch.randn_like(real), labels)
        r1_weight, r2_weight = D_OBJECTIVE.penalty_weights(
            optimizer_step_count(optimizers["discriminator"])
        )
        d_losses, real_logits = discriminator_update(
            self.discriminator,
            real,
            fake,
            labels,
            optimizers["discriminator"],
            loss=D_OBJECTIVE.loss,
            r1_weight=r1_weight,
            r2_weight=r2_weight,
        )
        g_loss = scored_by(self.discriminator, fake, labels, real_logits, D_OBJECTIVE.loss)
        optimizer = optimizers["net"]
        optimizer.zero_grad(set_to_none=True)
        (distill_loss + self.config.adversarial_weight * g_loss).backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        losses = {"loss": distill_loss.item(), "g_loss": g_loss.item(), **d_losses}
        return {**losses, **D_OBJECTIVE.logged_penalties(d_losses)}

    def _images_with_grad(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The student's K DDIM steps from the noise x, differentiable through every call;
        its x0 unclamped (`clip_x0`), so D sees what leaves [-1, 1]."""
        denoise = partial(self.denoise, labels=labels)
        return ddim_walk(denoise, x, self.schedule, timesteps(self.schedule, self.config.steps), -1)

    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Max(SNR, 1)-weighted MSE of the student's x0 against the segments' targets, on
        the inputs `student_inputs` says."""
        if self.config.student_inputs == "noised_data":
            inputs, t, targets, labels = self._noised_data_segment(x0, labels)
        else:
            inputs, t, targets, labels = self._path_segments(x0, labels)
        output = self.net(inputs, t, labels).float()
        x0_student = self.schedule.to_x0(inputs, t, output, self.config.prediction)
        weights = self.schedule.snr(t).clamp(min=1.0)
        return (weights * (x0_student - targets).pow(2).flatten(1).mean(1)).mean()

    def _teacher_walk(self, labels: torch.Tensor | None):
        self.teacher.eval()
        cfg = self.config
        sampling = SampleConfig(
            guidance_scale=cfg.teacher_guidance, guide_scale=cfg.teacher_guide_scale
        )
        denoise = self.teacher.sampling_denoiser(labels, sampling)
        return partial(get_walk(cfg.teacher_sampler), denoise, schedule=self.schedule)

    def _segment(self, k: int) -> tuple[int, int, list[int]]:
        """Student step k: its t, the next student step (-1: clean), the teacher's steps."""
        cfg = self.config
        grid = timesteps(self.schedule, cfg.steps)
        per_step = cfg.teacher_steps // cfg.steps
        teacher_grid = timesteps(self.schedule, cfg.teacher_steps)
        t_end = grid[k + 1] if k + 1 < cfg.steps else -1
        return grid[k], t_end, teacher_grid[k * per_step : (k + 1) * per_step]

    def _target(self, x_t: torch.Tensor, x_end: torch.Tensor, t: int, t_end: int) -> torch.Tensor:
        """The teacher's image on the last segment, else the x0 of one DDIM step to x_end."""
        return x_end if t_end < 0 else self._ddim_x0(x_t, x_end, t, t_end)

    @torch.no_grad()
    def _noised_data_segment(
        self, x0: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Progressive distillation's inputs: the batch noised to one student step (drawn
        per batch), the teacher walking from there to the next."""
        t, t_end, teacher_steps = self._segment(int(torch.randint(self.config.steps, ())))
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
        x_t = self.schedule.q_sample(x0, t_batch, torch.randn_like(x0))
        x_end = self._teacher_walk(labels)(x_t, ts=teacher_steps, t_end=t_end).float()
        return x_t, t_batch, self._target(x_t, x_end, t, t_end), labels

    @torch.no_grad()
    def _path_segments(
        self, x0: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Sampling paths from fresh noise, batch // K of them (so a step costs what a
        noised-data step does): every student step's state on each, with its target. The
        path is the teacher's own (`teacher_path`) or the student's (`student_path`: each
        next state is the student's DDIM step, the teacher walking only to make the target):
        the states the student meets when it samples."""
        steps = self.config.steps
        n = max(1, x0.shape[0] // steps)
        labels = None if labels is None else labels[:n]
        walk = self._teacher_walk(labels)
        x = torch.randn_like(x0[:n])
        inputs, t_all, targets = [], [], []
        for k in range(steps):
            t, t_end, teacher_steps = self._segment(k)
            t_batch = torch.full((n,), t, dtype=torch.long, device=x0.device)
            x_end = walk(x, ts=teacher_steps, t_end=t_end).float()
            inputs.append(x)
            targets.append(self._target(x, x_end, t, t_end))
            t_all.append(t_batch)
            if self.config.student_inputs == "student_path" and t_end >= 0:
                output = self.net(x, t_batch, labels).float()
                own = self.schedule.to_x0(x, t_batch, output, self.config.prediction)
                x_end = self._ddim_step(x, own, t, t_end)
            x = x_end
        repeated = None if labels is None else labels.repeat(steps)
        return torch.cat(inputs), torch.cat(t_all), torch.cat(targets), repeated

    def _ddim_step(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_end: int) -> torch.Tensor:
        """The deterministic DDIM step from x_t at t to t_end, given the x0 prediction."""
        return ddim_walk(lambda *_: x0, x_t, self.schedule, [t], t_end)

    def _ddim_x0(self, x_t: torch.Tensor, x_end: torch.Tensor, t: int, t_end: int) -> torch.Tensor:
        """The x0 whose deterministic DDIM step from x_t at t lands on x_end at t_end."""
        a, s = self.schedule.alpha_bar(t) ** 0.5, (1 - self.schedule.alpha_bar(t)) ** 0.5
        abar_end = self.schedule.alpha_bar(t_end)
        a_end, s_end = abar_end**0.5, (1 - abar_end) ** 0.5
        return (x_end - (s_end / s) * x_t) / (a_end - s_end * a / s)

    # ------------------------------------------------------------------ sampling

    def set_guide(self, guide: Family | None) -> None:
        if guide is not None:
            raise ConfigError(NO_GUIDE)

    def keep_guide(self, weights: dict[str, torch.Tensor]) -> None:
        raise ConfigError(NO_GUIDE)

    def default_sampling(self) -> SampleConfig:
        return SampleConfig(sampler="ddim", num_steps=self.config.steps, guidance_scale=1.0)

    def num_network_evaluations(self, sampling: SampleConfig) -> int:
        return self.config.steps

    def _run_sampler(
        self,
        x_start: torch.Tensor,
        t_start: int,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        sampling: SampleConfig,
        callback: Callback | None,
    ) -> torch.Tensor:
        """The student's K DDIM steps (eta 0, no guidance: it is folded in), whatever
        `sampling` says."""
        if t_start != self.num_timesteps - 1:
            raise ConfigError(
                "a distilled model samples from pure noise only: refine and edit with its "
                f"teacher ({self.config.teacher})"
            )
        return super()._run_sampler(
            x_start, t_start, labels, generator, self.default_sampling(), callback
        )
