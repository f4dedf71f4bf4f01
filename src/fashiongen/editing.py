"""Editing garments with a diffusion model: refine a sketch or photo, inpaint, variations.

`refine` noises input images to a `strength` and denoises them (SDEdit, Meng et al., arXiv
2108.01073) keeping them consistent with the input read as a blurred view (DDNM, Wang et al.,
arXiv 2212.00490; or ILVR-style low-pass guidance, Choi et al., arXiv 2108.02938), so the
output keeps the input's silhouette and gains the dataset's detail; with a class it
moves a garment to that class. `inpaint` regenerates the masked pixels only and keeps the
others bit for bit (RePaint, Lugmayr et al., arXiv 2201.09865); `variations` refines one
image n times with different noise. The maths is in `fashiongen.samplers.guided`; here are
the family-level entry points, which any family with a diffusion denoiser serves (the DDPM
itself, the hybrid through its refiner, up to the strength it was trained for) and every
other family refuses in one line. `fit_to_frame` converts any picture to the model's images
the way Fashion-MNIST was made (Xiao et al., arXiv 1708.07747, sec. 2: trimmed, longest edge
resized to the frame, centred, light garment on black) and says what it did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from fashiongen.config import SampleConfig
from fashiongen.data.dataset import resize_image
from fashiongen.errors import ConfigError
from fashiongen.models.base import Diffusion, DraftRefiner, Family, ImageShape, Student, eval_mode
from fashiongen.samplers import Callback, get_sampler, get_walk
from fashiongen.samplers.guided import (
    GUIDANCE_FORMS,
    GuidanceForm,
    RangeSpaceProjection,
    estimate_noise_sd,
    low_pass_guided,
    median3,
    range_null,
    repaint,
)
from fashiongen.samplers.sampling import Denoiser

# The default refine setting, chosen on benchmarks/design_studio.py (tenth session; the blur
# set at N = 500, where the originals score 0.39, then the benchmark at N = 1000): DDNM's
# range-space projection with time travel while t > 0.25 T, then DPM-Solver++ unguided,
# keeps the input's silhouette (IoU 0.79 -> 0.87) where Landweber steps on DPM-Solver++ could
# not (a data-prediction sampler re-derives eps from the corrected x0, and so undoes the
# correction while the noise is high); without time travel the projection leaves blotchy
# interiors (FID 2.1 against 1.0 with it), and the DPM-Solver++ finish takes FID from 0.87
# (DDIM to the end, guided while t > 0.15 T) to 0.72; guided while t > 0.25 T, 0.69.
DEFAULT_STRENGTH = 0.9
DEFAULT_GUIDANCE_FORM: GuidanceForm = "range-null"
DEFAULT_GUIDANCE_SIGMA = 1.6  # pixels: the input is read as a view blurred by about this much
DEFAULT_GUIDANCE_THRESHOLD = 0.5  # the blur's gain above which y's frequencies are kept
# range-null, where an input is noisy (its noise sd, estimated unless given, above 0.2: a
# blurred input reads about 0.01, textured clean garments up to 0.16, sd 0.5 clipped to the
# range about 0.34): project its 3x3 median (clipped noise is biased: it greys the black
# background), guided to the end by DDNM+'s noise-aware steps (the noise set, N = 500: FID
# 12.2 with the plain input and the stop, 3.8 with the median, 2.4 with both; 13.2 without
# the noise-aware steps; the Landweber default 4.3 at N = 1000)
DEFAULT_GUIDANCE_MEDIAN: bool | None = None  # None: where noisy; True / False: always / never
DEFAULT_GUIDANCE_NOISE: float | None = None  # y's noise sd in [-1, 1] units, None estimates it
NOISY_INPUT_SD = 0.2
NOISY_INPUT_STOP = 0.0
DEFAULT_GUIDANCE_STOP = 0.25  # the last quarter of t unguided (the Landweber forms took 0.5)
DEFAULT_JUMP_LENGTH = 5  # RePaint's time travel, for the range-null form and for inpainting
DEFAULT_NUM_RESAMPLES = 3
# The Landweber forms' steps ("deblur", "low-pass"), the default until the tenth session
DEFAULT_GUIDANCE_WEIGHT = 1.0
DEFAULT_GUIDANCE_ITERATIONS = 5
# range-null's guided steps are DDIM with eta 0.85 (as DDNM's paper), its finish the sampler's
# own; guide_scale applies where the denoiser carries a guide (the zoo DDPM does), else
# classifier-free guidance alone
DEFAULT_EDIT_SAMPLING = SampleConfig(
    sampler="dpmpp_2m", num_steps=20, eta=0.85, guidance_scale=1.5, guide_scale=2.0
)
# RePaint's ancestral steps, each resampled: 10 of them, classifier-free guidance only
DEFAULT_INPAINT_SAMPLING = SampleConfig(sampler="ddim", num_steps=10, guidance_scale=1.5)
MAX_GUIDANCE_SIGMA = 8.0
MAX_LANDWEBER_STEP = 2.0  # Landweber converges for steps below 2 / ||G||^2 = 2
MAX_GUIDANCE_ITERATIONS = 100
MAX_NOISE_SD = 2.0  # the width of the [-1, 1] range
INK_THRESHOLD = 40  # grey level above which a pixel is garment, not background (0..255)
MAX_GREY = 255
FILL_GREY = 160  # inside a filled outline: the mid grey of the dataset's garments
OUTSIDE_MARK = 1  # flood-fill value of background joined to the border


@dataclass(frozen=True)
class Guidance:
    """Guidance towards the input (`fashiongen.samplers.guided`), the input read as a view
    of the garment blurred by `sigma` pixels, applied while t > `stop` * T, in a `form`:

    - "range-null" (DDNM, `range_null`): the frequencies where that blur's gain exceeds
      `threshold` are the input's, deblurred, at every guided step, DDIM with the
      sampling's eta (DDNM+'s noise-aware step for an input with white noise of sd
      `noise_sd` in [-1, 1] units; None estimates it per image, about 0 for a blurred
      input; 0 reads the input as clean), and time travel of `jump_length` steps,
      `num_resamples` times; the sampling's own sampler then finishes unguided. With
      `use_median` the input's 3x3 median is projected instead (isolated and clipped noise
      out); with None (the default) that happens, and the guidance goes on to the end
      (stop 0), for each image whose noise sd exceeds NOISY_INPUT_SD;
    - "deblur" (G x0 = median3(y)) or "low-pass" (ILVR: G x0 = G y): `num_iterations`
      Landweber steps of size `weight` in [0, 2) per prediction (0: plain SDEdit), on the
      sampling's own sampler.
    """

    form: GuidanceForm = DEFAULT_GUIDANCE_FORM
    sigma: float = DEFAULT_GUIDANCE_SIGMA
    threshold: float = DEFAULT_GUIDANCE_THRESHOLD
    use_median: bool | None = DEFAULT_GUIDANCE_MEDIAN
    noise_sd: float | None = DEFAULT_GUIDANCE_NOISE
    jump_length: int = DEFAULT_JUMP_LENGTH
    num_resamples: int = DEFAULT_NUM_RESAMPLES
    weight: float = DEFAULT_GUIDANCE_WEIGHT
    num_iterations: int = DEFAULT_GUIDANCE_ITERATIONS
    stop: float = DEFAULT_GUIDANCE_STOP

    def __post_init__(self) -> None:
        if self.form not in GUIDANCE_FORMS:
            raise ConfigError(
                f"guidance form must be one of {', '.join(GUIDANCE_FORMS)}, got {self.form!r}"
            )
        if not 0 < self.sigma <= MAX_GUIDANCE_SIGMA:
            raise ConfigError(
                f"guidance sigma must lie in (0, {MAX_GUIDANCE_SIGMA}], got {self.sigma}"
            )
        if not 0 <= self.weight < MAX_LANDWEBER_STEP:
            raise ConfigError(
                f"guidance weight must lie in [0, {MAX_LANDWEBER_STEP}), got {self.weight}"
            )
        if not 1 <= self.num_iterations <= MAX_GUIDANCE_ITERATIONS:
            raise ConfigError(
                f"guidance iterations must be between 1 and "
                f"{MAX_GUIDANCE_ITERATIONS}, got {self.num_iterations}"
            )
        if not 0 <= self.stop <= 1:
            raise ConfigError(f"guidance stop must lie in [0, 1], got {self.stop}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"guidance threshold must lie in (0, 1), got {self.threshold}")
        if self.noise_sd is not None and not 0 <= self.noise_sd <= MAX_NOISE_SD:
            raise ConfigError(
                f"guidance noise_sd must lie in [0, {MAX_NOISE_SD}], got {self.noise_sd}"
            )
        if self.jump_length < 1 or self.num_resamples < 1:
            raise ConfigError("guidance jump_length and num_resamples must be >= 1")


# Class transfer lets the silhouette change: no low-pass guidance, stronger class guidance
# (benchmarks/design_studio.py, N = 1000, the zoo DDPM of 80 CPU-minutes: 83% classified as
# the target at 5, 78% at 4, 87% at 6 with FID 3.39 against 5's 3.11).
TRANSFER_GUIDANCE: Guidance | None = None
TRANSFER_SAMPLING = SampleConfig(sampler="ddim", num_steps=10, guidance_scale=5.0)


def refine_settings(use_transfer: bool = False) -> tuple[Guidance | None, SampleConfig]:
    """(guidance, sampling) of a refine that keeps the input's silhouette, or with
    `use_transfer` of one that lets it change towards the asked-for class."""
    if use_transfer:
        return TRANSFER_GUIDANCE, TRANSFER_SAMPLING
    return Guidance(), DEFAULT_EDIT_SAMPLING


def editor_of(model: Family) -> Diffusion:
    """The diffusion denoiser that edits for `model`, or a one-line ConfigError."""
    if isinstance(model, Student):
        raise ConfigError(
            f"a distilled model samples from pure noise only: edit with its teacher "
            f"({model.teacher_source})"
        )
    if isinstance(model, Diffusion):
        return model
    if isinstance(model, DraftRefiner):
        return model.refiner
    raise ConfigError(
        f"the {model.config.name} family cannot edit images (refine, inpaint "
        "and variations need a diffusion denoiser): use a ddpm or hybrid model"
    )


def can_edit(model: Family) -> bool:
    """Whether `model` serves refine, inpaint and variations."""
    return isinstance(model, Diffusion | DraftRefiner) and not isinstance(model, Student)


def edit_denoiser(denoiser: Diffusion, labels: torch.Tensor | None, sampling: SampleConfig):
    """The (x_t, t) -> x0 function an edit samples with: `sampling`'s classifier-free
    guidance, and its autoguidance where the denoiser carries a guide."""
    if denoiser.guide is None:
        sampling = replace(sampling, guide_scale=1.0)
    return denoiser.sampling_denoiser(labels, sampling)


def t_start_of(denoiser: Diffusion, strength: float) -> int:
    """The timestep an input is noised to: strength * T - 1; 0 for strength 0."""
    if not 0 <= strength <= 1 or not math.isfinite(strength):
        raise ConfigError(f"strength must lie in (0, 1], got {strength}")
    t_start = max(0, round(strength * denoiser.num_timesteps) - 1)
    if t_start > denoiser.max_timestep:
        highest = (denoiser.max_timestep + 1) / denoiser.num_timesteps
        raise ConfigError(
            f"strength {strength} is above {highest:g}, the highest this "
            "model's denoiser was trained for"
        )
    return t_start


def _prepare(
    model: Family, images: torch.Tensor, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images as float (B, C, H, W) in [-1, 1] on the model's device; labels checked."""
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(model.image_shape):
        raise ConfigError(
            f"images must be (B, {', '.join(map(str, model.image_shape))}), got "
            f"{tuple(images.shape)}: convert them with fit_to_frame"
        )
    if labels is not None:
        labels = model.check_labels(len(images), labels)
    return images.to(model.device, torch.float32), labels


@torch.no_grad()
def refine(
    model: Family,
    images: torch.Tensor,
    strength: float = DEFAULT_STRENGTH,
    *,
    labels: torch.Tensor | None = None,
    guidance: Guidance | None = Guidance(),
    sampling: SampleConfig = DEFAULT_EDIT_SAMPLING,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Image to image: noise to `strength`, denoise with guidance towards the input (SDEdit
    with DDNM's data consistency, or ILVR-style Landweber steps: `Guidance`).

    Args:
        model: a family that can edit (`can_edit`).
        images: (B, C, H, W) float in [-1, 1], the model's image shape.
        strength: in [0, 1]: how far the input is noised (0 returns it unchanged, 1 starts
            from pure noise and keeps only what guidance keeps).
        labels: (B,) target classes, or None to keep the input's (unconditional denoiser).
        guidance: guidance towards the input, or None for plain SDEdit.
        sampling: sampler (the range-null form's guided steps are DDIM with its eta, the
            sampler finishes), num_steps, eta, classifier-free guidance_scale and
            autoguidance guide_scale.
        generator: feeds all noise: the same seed gives the same images.
        callback: progress, callback(step_index, num_steps).

    Returns:
        (B, C, H, W) float in [-1, 1].
    """
    denoiser = editor_of(model)
    t_start = t_start_of(denoiser, strength)
    x0, labels = _prepare(model, images, labels)
    if strength == 0:
        return x0
    eps = model.randn(*x0.shape, generator=generator)
    t = torch.full((len(x0),), t_start, dtype=torch.long, device=x0.device)
    x_start = denoiser.schedule.q_sample(x0, t, eps)
    noise_sd = _input_noise_sd(x0, guidance)
    out = torch.empty_like(x0)
    with eval_mode(model):
        for group, setting in _settings_per_input(noise_sd, guidance):  # in turn, one generator
            denoise = edit_denoiser(denoiser, None if labels is None else labels[group], sampling)
            out[group] = _sample_towards(
                x0[group],
                x_start[group],
                noise_sd[group],
                denoise,
                denoiser,
                t_start,
                setting,
                sampling,
                generator,
                callback,
            )
    return out.clamp(-1, 1)


def _input_noise_sd(x0: torch.Tensor, guidance: Guidance | None) -> torch.Tensor:
    """(B,) each input's white-noise sd: the guidance's, else estimated (the range-null
    form), else 0 (the other forms do not read it)."""
    if guidance is None or guidance.form != "range-null":
        return torch.zeros(len(x0), device=x0.device)
    if guidance.noise_sd is None:
        return estimate_noise_sd(x0)
    return torch.full((len(x0),), guidance.noise_sd, device=x0.device)


def _settings_per_input(
    noise_sd: torch.Tensor, guidance: Guidance | None
) -> list[tuple[torch.Tensor, Guidance | None]]:
    """(which images, as a bool (B,) mask; the guidance they take): the range-null form
    with `use_median` None reads each image as noisy where its noise sd exceeds
    NOISY_INPUT_SD, and projects those images' median, guided to the end."""
    if guidance is None or guidance.form != "range-null" or guidance.use_median is not None:
        return [(torch.ones_like(noise_sd, dtype=torch.bool), guidance)]
    noisy = noise_sd > NOISY_INPUT_SD
    settings = (
        (~noisy, replace(guidance, use_median=False)),
        (noisy, replace(guidance, use_median=True, stop=NOISY_INPUT_STOP)),
    )
    return [(group, setting) for group, setting in settings if group.any()]


def _sample_towards(
    x0: torch.Tensor,
    x_start: torch.Tensor,
    noise_sd: torch.Tensor,
    denoise: Denoiser,
    denoiser: Diffusion,
    t_start: int,
    guidance: Guidance | None,
    sampling: SampleConfig,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> torch.Tensor:
    """Sample from x_start at t_start towards the input x0 (its noise sd `noise_sd`, (B,)):
    DDNM's sampler for the range-null form, else the sampling's sampler on a
    Landweber-guided (or plain) denoiser."""
    t_stop = -1 if guidance is None else round(guidance.stop * denoiser.num_timesteps) - 1
    common = dict(num_steps=sampling.num_steps, t_start=t_start, eta=sampling.eta)
    if guidance is not None and guidance.form == "range-null":
        projection = RangeSpaceProjection(
            median3(x0) if guidance.use_median else x0,
            sigma=guidance.sigma,
            threshold=guidance.threshold,
            noise_sd=noise_sd,
        )
        return range_null(
            denoise,
            projection,
            x_start,
            denoiser.schedule,
            **common,
            jump_length=guidance.jump_length,
            num_resamples=guidance.num_resamples,
            t_stop=t_stop,
            finish=get_walk(sampling.sampler),
            generator=generator,
            callback=callback,
        )
    if guidance is not None:
        denoise = low_pass_guided(
            denoise,
            x0,
            sigma=guidance.sigma,
            weight=guidance.weight,
            num_iterations=guidance.num_iterations,
            form=guidance.form,
            t_stop=t_stop,
        )
    sample = get_sampler(sampling.sampler)
    return sample(
        denoise, x_start, denoiser.schedule, **common, generator=generator, callback=callback
    )


@torch.no_grad()
def inpaint(
    model: Family,
    images: torch.Tensor,
    mask: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    strength: float = 1.0,
    jump_length: int = DEFAULT_JUMP_LENGTH,
    num_resamples: int = DEFAULT_NUM_RESAMPLES,
    sampling: SampleConfig = DEFAULT_INPAINT_SAMPLING,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Regenerate the masked pixels, keep the others bit for bit (RePaint).

    Args:
        model: a family that can edit (`can_edit`).
        images: (B, C, H, W) float in [-1, 1].
        mask: bool (B or 1, 1 or C, H, W): True where pixels are regenerated.
        labels: (B,) classes, or None (unconditional denoiser).
        strength: where the masked region starts: 1 from pure noise, lower from the input
            there noised to that level (to rework a sketched change).
        jump_length, num_resamples: RePaint's resampling (r = 1: none).
        sampling: num_steps on the way down and classifier-free guidance_scale (RePaint
            samples ancestrally whatever `sampling.sampler` says).
        generator, callback: as in `refine`.

    Returns:
        (B, C, H, W) float in [-1, 1], equal to `images` wherever `mask` is False.
    """
    denoiser = editor_of(model)
    t_start = t_start_of(denoiser, strength)
    x0, labels = _prepare(model, images, labels)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=x0.device)
    if mask.dim() != 4 or mask.shape[-2:] != x0.shape[-2:]:
        raise ConfigError(
            f"mask must be (B, 1, {x0.shape[-2]}, {x0.shape[-1]}), got {tuple(mask.shape)}"
        )
    if strength == 0 or not mask.any():
        return x0
    if num_resamples < 1 or jump_length < 1:
        raise ConfigError("inpaint: jump_length and num_resamples must be >= 1")
    denoise = edit_denoiser(denoiser, labels, sampling)
    with eval_mode(model):
        out = repaint(
            denoise,
            x0,
            mask,
            denoiser.schedule,
            num_steps=sampling.num_steps,
            t_start=t_start,
            jump_length=jump_length,
            num_resamples=num_resamples,
            generator=generator,
            callback=callback,
        )
    # Clamping the generated pixels only: the kept ones are returned as given.
    return torch.where(mask.expand_as(out), out.clamp(-1, 1), x0)


def variations(
    model: Family,
    image: torch.Tensor,
    num_variations: int,
    strength: float = DEFAULT_STRENGTH,
    *,
    label: int | None = None,
    guidance: Guidance | None = Guidance(),
    sampling: SampleConfig = DEFAULT_EDIT_SAMPLING,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """`num_variations` refinements of one image (C, H, W) or (1, C, H, W), each with its
    own noise: (num_variations, C, H, W) in [-1, 1]."""
    if num_variations < 1:
        raise ConfigError(f"variations: the number must be >= 1, got {num_variations}")
    batch = image.reshape(1, *image.shape[-3:]).expand(num_variations, -1, -1, -1)
    labels = None if label is None else torch.full((num_variations,), label, dtype=torch.long)
    return refine(
        model,
        batch,
        strength,
        labels=labels,
        guidance=guidance,
        sampling=sampling,
        generator=generator,
        callback=callback,
    )


# ---------------------------------------------------------------------- input conversion


@dataclass(frozen=True)
class Framing:
    """How a picture was fitted into the model's frame (applied to its mask the same way)."""

    source_size: tuple[int, int]  # (width, height) of the picture given
    crop: tuple[int, int, int, int]  # (left, top, right, bottom) box of the garment
    fitted_size: tuple[int, int]  # (width, height) the crop was resized to
    frame: tuple[int, int]  # (width, height) of the model's images
    inverted: bool  # light background made black

    @property
    def offset(self) -> tuple[int, int]:
        return (
            (self.frame[0] - self.fitted_size[0]) // 2,
            (self.frame[1] - self.fitted_size[1]) // 2,
        )

    def apply(self, grey: Image.Image) -> Image.Image:
        """Crop, resize and centre a mode-"L" picture of `source_size` on black."""
        fitted = grey.crop(self.crop)
        if fitted.size != self.fitted_size:
            fitted = resize_image(fitted, self.fitted_size)
        canvas = Image.new("L", self.frame, 0)
        canvas.paste(fitted, self.offset)
        return canvas

    def describe(self) -> str:
        w, h = self.source_size
        steps = [f"{w}x{h}"]
        if self.inverted:
            steps.append("light background inverted to black")
        if self.crop != (0, 0, w, h):
            left, top, right, bottom = self.crop
            steps.append(f"cropped to the garment ({right - left}x{bottom - top})")
        if self.fitted_size != self.frame or self.crop != (0, 0, w, h):
            fw, fh = self.fitted_size
            steps.append(
                f"resized to {fw}x{fh}, centred on a black {self.frame[0]}x{self.frame[1]}"
            )
        return " -> ".join(steps) if len(steps) > 1 else f"{w}x{h}, used as it is"


def to_grey(picture: Image.Image) -> Image.Image:
    """Mode "L", transparent pixels set to the opposite of the drawn ones' mean grey (so
    dark strokes on a transparent sketch pad become dark on white)."""
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        grey = np.asarray(rgba.convert("L"))
        drawn = grey[alpha > 0]
        background = 0 if drawn.size and drawn.mean() > MAX_GREY / 2 else MAX_GREY
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        return Image.alpha_composite(canvas, rgba).convert("L")
    if picture.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits
        return Image.fromarray((np.asarray(picture, dtype=np.uint32) >> 8).astype(np.uint8))
    return picture.convert("L")


def fit_to_frame(
    picture: Image.Image, image_shape: ImageShape, *, use_fill: bool = False
) -> tuple[np.ndarray, Framing]:
    """Any picture -> uint8 (C, H, W) for the model, as Fashion-MNIST's images were made.

    A picture already of the frame's size is only made grey (and inverted if its background
    is light); any other is inverted if need be, trimmed to the garment (pixels above
    `INK_THRESHOLD`), resized so its longest edge fills the frame and centred on black.
    `use_fill` fills closed outlines (a sketch) with `FILL_GREY` first: the dataset's
    garments are solid, not outlines.
    """
    channels, height, width = image_shape
    grey = to_grey(picture)
    array = np.asarray(grey)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    inverted = bool(np.median(border) > MAX_GREY / 2)
    if inverted:
        grey = ImageOps.invert(grey)
        array = np.asarray(grey)
    if use_fill:
        grey = fill_outlines(grey)
        array = np.asarray(grey)
    if grey.size == (width, height):
        framing = Framing(
            grey.size, (0, 0, width, height), (width, height), (width, height), inverted
        )
    else:
        framing = _framing(array, (width, height), inverted)
    fitted = np.asarray(framing.apply(grey))
    return np.repeat(fitted[None], channels, axis=0), framing


def fill_outlines(grey: Image.Image) -> Image.Image:
    """Background (at most `INK_THRESHOLD`) that no path of background joins to the border
    is inside an outline: set to `FILL_GREY`."""
    ink = np.asarray(grey) > INK_THRESHOLD
    # .copy(): an image made by fromarray may share the array's memory, which floodfill
    # would then not change in what asarray reads back.
    padded = Image.fromarray(np.pad(np.where(ink, MAX_GREY, 0), 1).astype(np.uint8)).copy()
    ImageDraw.floodfill(padded, (0, 0), OUTSIDE_MARK)
    inside = np.asarray(padded)[1:-1, 1:-1] == 0
    return Image.fromarray(np.where(inside, FILL_GREY, np.asarray(grey)).astype(np.uint8))


def _framing(array: np.ndarray, frame: tuple[int, int], inverted: bool) -> Framing:
    rows, cols = np.nonzero(array > INK_THRESHOLD)
    source = (array.shape[1], array.shape[0])
    if rows.size == 0:  # nothing drawn: the whole picture, squeezed into the frame
        crop = (0, 0, *source)
    else:
        crop = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    crop_w, crop_h = crop[2] - crop[0], crop[3] - crop[1]
    scale = min(frame[0] / crop_w, frame[1] / crop_h)
    fitted = (
        max(1, min(frame[0], round(crop_w * scale))),
        max(1, min(frame[1], round(crop_h * scale))),
    )
    return Framing(source, crop, fitted, frame, inverted)


def mask_to_frame(mask: Image.Image, framing: Framing) -> np.ndarray:
    """A mask picture (white = regenerate) -> bool (1, H, W) in the model's frame: one of
    the frame's size is used as it is, one of the input's size follows its framing."""
    frame = framing.frame
    if mask.size not in (frame, framing.source_size):
        raise ConfigError(
            f"the mask is {mask.size[0]}x{mask.size[1]}: it must be "
            f"{frame[0]}x{frame[1]} (the model's images) or "
            f"{framing.source_size[0]}x{framing.source_size[1]} (the input's)"
        )
    grey = to_grey(mask)
    if grey.size != frame:
        grey = replace(framing, inverted=False).apply(grey)
    return np.asarray(grey)[None] > MAX_GREY / 2
