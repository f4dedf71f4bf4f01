"""Editing samplers: data consistency (DDNM, ILVR) and inpainting with resampling (RePaint).

Plain functions of a denoise fn `(x_t, t) -> x0_pred`, like the samplers in
`fashiongen.samplers.sampling`, so they work for every diffusion family and are tested with
oracle denoisers. `low_pass_guided` wraps a denoiser so that each x0 prediction agrees with a
reference image at low frequencies, in one of two forms: ILVR's phi(x0) = phi(y) (Choi et al.,
arXiv 2108.02938, eq. 5-6), both sides low-passed by a Gaussian G, so nothing above G's band
is enforced; or the deblurring form G x0 = m(y), the reference read as a blurred view of the
garment and first cleaned by a 3x3 median m (speckle and clipped noise removed, edges kept).
Either is imposed on the x0 prediction the way DDNM's range-space correction
x0 <- x0 + A^+(y - A x0) is (Wang et al., arXiv 2212.00490, eq. 13), the pseudo-inverse
replaced by Landweber iterations (Landweber, Amer. J. Math. 73, 1951); any sampler then runs
on the guided denoiser (SDEdit's start from a noised input, Meng et al., arXiv 2108.01073,
is the caller's `x_start`). `range_null` is DDNM itself, its own sampler: the blur's exact
truncated pseudo-inverse (`RangeSpaceProjection`, in the Fourier basis; DDNM+'s noise-aware
step where the reference is noisy) at every step while
t > t_stop, the network's noise estimate kept, RePaint's time travel, and an unguided finish
by any sampler's walk. `repaint` keeps the
known pixels of an image and regenerates the masked ones (Lugmayr et al., arXiv 2201.09865):
at every step the known region is the input noised to that step, eq. 8, and after every
`jump_length` steps the sample is noised back up that many steps and denoised again,
`num_resamples` times in all, so the generated region harmonises with the kept one (their
sec. 4.2). The last step writes the known pixels back exactly. `autoguided` combines two
denoisers of one task, the model and a weaker guide (Karras et al., arXiv 2406.02507).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from fashiongen.samplers.sampling import (
    Callback,
    Denoiser,
    _noise_like,
    _t_batch,
    ddim_noise_sd,
    ddim_step,
    dpmpp_2m_walk,
    implied_noise,
    posterior_sample,
    timesteps,
)
from fashiongen.samplers.schedules import NoiseSchedule

TRUNCATE_SIGMAS = 3  # the Gaussian kernel's half-width, in standard deviations
GuidanceForm = Literal["range-null", "deblur", "low-pass"]
LANDWEBER_FORMS = ("deblur", "low-pass")  # the forms `low_pass_guided` serves
GUIDANCE_FORMS: tuple[str, ...] = get_args(GuidanceForm)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """G_sigma x: a separable Gaussian blur of (B, C, H, W), edges replicated; sigma 0 is
    the identity. Symmetric away from the edges, so G^T = G in the Landweber step."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(TRUNCATE_SIGMAS * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1, 1)  # (C, 1, 1, K) depthwise
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel, groups=x.shape[1])
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"),
        kernel.transpose(-1, -2),
        groups=x.shape[1],
    )


def median3(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 median of each pixel of (B, C, H, W), edges replicated."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # (B, C, H, W, 3, 3)
    return windows.flatten(-2).median(-1).values


def blur_gain(height: int, width: int, sigma: float, device=None) -> torch.Tensor:
    """(H, W) real: the gain of a circular Gaussian blur of `sigma` pixels at each frequency
    of `torch.fft.fft2`'s grid, in [0, 1] (1 at the mean; about 0 at the highest frequencies
    of a wide blur, up to rounding). A Gaussian's DFT is real."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    dy = torch.minimum(rows, height - rows).float()  # circular distance to (0, 0)
    dx = torch.minimum(cols, width - cols).float()
    kernel = torch.exp(-(dy[:, None] ** 2 + dx[None] ** 2) / (2 * sigma**2))
    return torch.fft.fft2(kernel / kernel.sum()).real


MAD_TO_SD = 0.6745  # the median absolute deviation of a standard normal


def estimate_noise_sd(images: torch.Tensor) -> torch.Tensor:
    """(B,) the sd of white noise in each image of (B, C, H, W), Donoho's robust estimate:
    the median absolute finest diagonal Haar coefficient / 0.6745 (Donoho & Johnstone,
    Biometrika 81, 1994). Smooth images (a blurred garment) give about 0, since their
    diagonal detail is; white noise of sd s gives s (less where the range's bounds clipped
    it: sd 0.5 on Fashion-MNIST's black backgrounds reads about 0.34; textured clean
    garments up to about 0.16)."""
    x = images.float()[..., : images.shape[-2] // 2 * 2, : images.shape[-1] // 2 * 2]
    diagonal = (
        x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]
    ) / 2
    return diagonal.flatten(1).abs().median(1).values / MAD_TO_SD


class RangeSpaceProjection:
    """DDNM's x0 -> x0 + A^+ (y - A x0) (Wang et al., arXiv 2212.00490, eq. 13) for A the
    Gaussian blur G_sigma truncated to its range space: G is diagonal in the Fourier basis
    (taken circular: garments lie on black), so the truncated SVD keeps the frequencies
    whose gain g exceeds `threshold`. There x0 takes the reference's values deblurred, y/g
    (its errors grow at most 1/threshold times); every other frequency, the null space, is
    the model's. Applied to an x0 already consistent with y it changes nothing.

    A reference with white noise of sd `noise_sd` (per image, (B,)) makes y/g noisy by
    noise_sd / g at each frequency; `ddim_step` is then DDNM+'s (their sec. 4.1): the
    correction is scaled per frequency so the noise it brings into x_t' stays within the
    step's own fresh noise, and that fresh noise is reduced by as much."""

    def __init__(
        self,
        reference: torch.Tensor,
        *,
        sigma: float,
        threshold: float,
        noise_sd: torch.Tensor | None = None,
    ) -> None:
        gain = blur_gain(*reference.shape[-2:], sigma, reference.device)
        self.in_range = gain > threshold
        self.deblurred = torch.fft.fft2(reference.float()) / torch.where(self.in_range, gain, 1.0)
        # noise_sd / g in the range space (B, 1, H, W), None where the reference is clean
        self.noise = None
        if noise_sd is not None and bool((noise_sd > 0).any()):
            per_image = noise_sd.float().reshape(-1, 1, 1, 1).to(reference.device)
            self.noise = torch.where(self.in_range, per_image / gain.clamp_min(threshold), 0.0)

    def __call__(self, x0: torch.Tensor, weight: torch.Tensor | float = 1.0) -> torch.Tensor:
        """x0 with its range-space frequencies moved `weight` (per frequency) of the way to
        the reference's (1: replaced)."""
        spectrum = torch.fft.fft2(x0.float())
        correction = torch.where(self.in_range, self.deblurred - spectrum, 0)
        return torch.fft.ifft2(spectrum + weight * correction).real

    def ddim_step(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        schedule: NoiseSchedule,
        t: int,
        t_prev: int,
        eta: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One DDIM step (eta) from the projected x0 and the network's eps; with a noisy
        reference, DDNM+'s: where x0's coefficient a = sqrt(abar_t') times the noise y/g
        brings exceeds the step's fresh noise s, the correction takes s / (a noise_sd / g)
        of the way and the fresh noise there is sqrt(s^2 - (lambda a noise_sd / g)^2)."""
        if self.noise is None:
            return ddim_step(self(x0), eps, schedule, t, t_prev, eta, generator)
        carried = math.sqrt(schedule.alpha_bar(t_prev)) * self.noise
        fresh = ddim_noise_sd(schedule, t, t_prev, eta)
        weight = torch.where(carried > fresh, fresh / carried.clamp_min(1e-12), 1.0)

        def colour(white: torch.Tensor, sigma: float) -> torch.Tensor:
            left = (sigma**2 - (weight * carried) ** 2).clamp_min(0).sqrt()
            spectrum = torch.fft.fft2(white, norm="ortho")
            return torch.fft.ifft2(left * spectrum, norm="ortho").real

        return ddim_step(self(x0, weight), eps, schedule, t, t_prev, eta, generator, colour)


def low_pass_guided(
    denoise: Denoiser,
    reference: torch.Tensor,
    *,
    sigma: float,
    weight: float = 1.0,
    num_iterations: int = 10,
    t_stop: int = -1,
    form: GuidanceForm = "deblur",
) -> Denoiser:
    """A denoiser whose x0 prediction agrees with the reference at low frequencies.

    The condition is G_sigma x0 = r: r = median3(y) for form "deblur" (y read as a view of
    the garment blurred by about sigma: the steps undo that blur, while the median keeps
    isolated noise out of r), r = G_sigma y for "low-pass" (ILVR: only y's coarse structure,
    whatever y holds above G's band is left to the model). Each x0 prediction is moved
    towards it by `num_iterations` Landweber steps x0 <- x0 + weight * G^T (r - G x0): per
    frequency of gain g the error shrinks by (1 - weight g^2) a step, so the frequencies G
    removes are left to the model. Applied while t > t_stop.

    Args:
        denoise: (x_t, t) -> x0 prediction, (B, C, H, W).
        reference: y, (B, C, H, W) in [-1, 1].
        sigma: the blur, in pixels: larger constrains coarser structure only.
        weight: the Landweber step in [0, 2) (the steps converge below 2 / ||G||^2 = 2);
            0 is the plain denoiser.
        num_iterations: Landweber steps per prediction.
        t_stop: guide at timesteps above it; -1 guides every step.
        form: "deblur" or "low-pass", as above.
    """
    if form not in LANDWEBER_FORMS:
        raise ValueError(f"form must be one of {LANDWEBER_FORMS}, got {form!r}")
    target = median3(reference) if form == "deblur" else gaussian_blur(reference, sigma)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = denoise(x_t, t)
        if weight == 0 or int(t.max()) <= t_stop:
            return x0
        for _ in range(num_iterations):
            x0 = x0 + weight * gaussian_blur(target - gaussian_blur(x0, sigma), sigma)
        return x0

    return guided


def repaint_path(num_steps: int, jump_length: int, num_resamples: int) -> list[int]:
    """The step indices RePaint visits, from 0 (x_{t_start}) to num_steps (clean): after
    each `jump_length`-th index it goes back up `jump_length` indices, `num_resamples - 1`
    times, so every full block of steps is sampled `num_resamples` times.

    e.g. (4, 2, 2) -> [0, 1, 2, 0, 1, 2, 3, 4, 2, 3, 4]; num_resamples 1 is plain sampling.
    """
    if num_steps < 1 or jump_length < 1 or num_resamples < 1:
        raise ValueError("num_steps, jump_length and num_resamples must be >= 1")
    path = [0]
    jumps_left = {i: num_resamples - 1 for i in range(jump_length, num_steps + 1, jump_length)}
    index = 0
    while index < num_steps:
        index += 1
        path.append(index)
        if jumps_left.get(index, 0) > 0:
            jumps_left[index] -= 1
            index -= jump_length
            path.append(index)
    return path


@torch.no_grad()
def repaint(
    denoise: Denoiser,
    x_known: torch.Tensor,
    mask: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    num_steps: int,
    t_start: int | None = None,
    jump_length: int = 5,
    num_resamples: int = 1,
    x_start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Regenerate the pixels where `mask` is True and keep the others exactly (RePaint).

    Downward moves draw x_{t'} ~ q(x_{t'} | x_t, x0_pred) in the masked region (the
    ancestral posterior between strided steps, Ho et al. eq. 6-7) and x_{t'} ~ q(x_{t'} | x0)
    from the known image elsewhere (RePaint eq. 8); upward moves draw
    x_t ~ q(x_t | x_{t'}) = N(sqrt(abar_t / abar_t') x_t', (1 - abar_t / abar_t') I).

    Args:
        denoise: (x_t, t) -> x0 prediction.
        x_known: (B, C, H, W) in [-1, 1], the image whose unmasked pixels are kept.
        mask: bool, broadcastable to x_known: True where pixels are regenerated.
        schedule: the denoiser's noise schedule.
        num_steps: denoising steps on the way down (at most t_start + 1).
        t_start: the first timestep; default T-1 (the masked region starts as pure noise).
        jump_length, num_resamples: RePaint's j and r; r = 1 samples without resampling.
        x_start: x_{t_start} (B, C, H, W); default x_known noised to t_start.
        generator: feeds all noise.
        callback: callback(move_index, num_moves) after each move of `repaint_path`.

    Returns:
        (B, C, H, W): x_known where mask is False, bit for bit; generated where True.
    """
    mask = mask.to(device=x_known.device, dtype=torch.bool).expand_as(x_known)
    ts = [*timesteps(schedule, num_steps, t_start), -1]  # -1: clean
    path = repaint_path(len(ts) - 1, jump_length, num_resamples)
    if x_start is None:
        x_start = _q_sample(schedule, x_known, ts[0], generator)

    def step(x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        return _repaint_step(denoise, x, x_known, mask, schedule, t, t_prev, generator)

    x = _resampling_walk(step, x_start, schedule, ts, path, generator, callback)
    return torch.where(mask, x, x_known)


def _resampling_walk(
    step: Callable[[torch.Tensor, int, int], torch.Tensor],
    x: torch.Tensor,
    schedule: NoiseSchedule,
    ts: list[int],
    path: list[int],
    generator: torch.Generator | None,
    callback: Callback | None,
) -> torch.Tensor:
    """Walk `path` (indices into `ts`): `step(x, t, t_prev)` on the way down, q(x_t | x_t')
    on the way back up; callback(move_index, num_moves) after each move."""
    for move, (here, there) in enumerate(zip(path, path[1:], strict=False)):
        if there > here:
            x = step(x, ts[here], ts[there])
        else:
            x = _noise_up(schedule, x, ts[here], ts[there], generator)
        if callback is not None:
            callback(move, len(path) - 1)
    return x


@torch.no_grad()
def range_null(
    denoise: Denoiser,
    projection: RangeSpaceProjection,
    x_start: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    num_steps: int,
    t_start: int | None = None,
    eta: float = 0.85,
    jump_length: int = 5,
    num_resamples: int = 3,
    t_stop: int = -1,
    finish: Callable[..., torch.Tensor] = dpmpp_2m_walk,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDNM with time travel (Wang et al., arXiv 2212.00490, Algorithm 1 and sec. 3.3), then
    an unguided finish.

    While t > t_stop, each DDIM step (eta, eq. 12) replaces the x0 prediction by its
    projection (`RangeSpaceProjection.ddim_step`: DDNM+'s for a noisy reference) and keeps
    the network's own eps, x_t' = sqrt(abar') P(x0) + ... eps, so the correction stays in
    the state (a data-prediction sampler re-derives eps from the corrected x0 and so undoes
    most of it while the noise is high); RePaint's path (`repaint_path`) goes back up
    `jump_length` steps after each block, `num_resamples` times in all, so the model's
    detail and the projected structure agree. The grid's steps at t <= t_stop are walked by
    `finish` (a `WALKS` entry: `walk(denoise, x, schedule, ts, t_end, *, eta, generator,
    callback)`), unguided, once.

    Returns:
        x0, (B, C, H, W).
    """
    ts = timesteps(schedule, num_steps, t_start)
    guided_ts = [t for t in ts if t > t_stop]
    finish_ts = ts[len(guided_ts) :]
    walk_ts = [*guided_ts, finish_ts[0] if finish_ts else -1]
    path = repaint_path(len(walk_ts) - 1, jump_length, num_resamples) if guided_ts else [0]
    num_moves = len(path) - 1 + len(finish_ts)

    def step(x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        x0 = denoise(x, _t_batch(t, x)).float()
        eps = implied_noise(x, x0, schedule, t)
        return projection.ddim_step(x0, eps, schedule, t, t_prev, eta, generator)

    def progress(offset: int) -> Callback | None:
        if callback is None:
            return None
        return lambda i, _: callback(offset + i, num_moves)

    x = _resampling_walk(step, x_start, schedule, walk_ts, path, generator, progress(0))
    if finish_ts:
        x = finish(
            denoise,
            x,
            schedule,
            finish_ts,
            -1,
            eta=eta,
            generator=generator,
            callback=progress(len(path) - 1),
        )
    return x


def _repaint_step(
    denoise: Denoiser,
    x: torch.Tensor,
    x_known: torch.Tensor,
    mask: torch.Tensor,
    schedule: NoiseSchedule,
    t: int,
    t_prev: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One downward move t -> t_prev: posterior sample where masked, q(x_t' | x0) elsewhere."""
    x0 = denoise(x, _t_batch(t, x))
    unknown = posterior_sample(x, x0, schedule, t, t_prev, generator)
    known = _q_sample(schedule, x_known, t_prev, generator)
    return torch.where(mask, unknown, known)


def _q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: int, generator: torch.Generator | None
) -> torch.Tensor:
    """x_t ~ q(x_t | x0); t = -1 returns x0 itself."""
    if t < 0:
        return x0
    abar = schedule.alpha_bar(t)
    return math.sqrt(abar) * x0 + math.sqrt(1 - abar) * _noise_like(x0, generator)


def _noise_up(
    schedule: NoiseSchedule,
    x: torch.Tensor,
    t_low: int,
    t_high: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """x_{t_high} ~ q(x_{t_high} | x_{t_low}) for t_high > t_low (t_low = -1: clean)."""
    ratio = schedule.alpha_bar(t_high) / schedule.alpha_bar(t_low)
    return math.sqrt(ratio) * x + math.sqrt(1 - ratio) * _noise_like(x, generator)


def autoguided(denoise: Denoiser, guide: Denoiser, scale: float, *, clip: bool = True) -> Denoiser:
    """Autoguidance (Karras et al., arXiv 2406.02507, eq. 2 on x0 predictions):
    guide(x_t) + scale (denoise(x_t) - guide(x_t)), where `guide` is a weaker denoiser of the
    same task (a smaller or less-trained model), so the step moves away from the errors a
    weaker model makes rather than, as classifier-free guidance does, away from other classes.
    scale = 1 is `denoise` alone; `clip` clamps the result to [-1, 1]."""

    def combined(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        good = denoise(x_t, t).float()
        x0 = torch.lerp(guide(x_t, t).float(), good, scale)
        return x0.clamp(-1, 1) if clip else x0

    return combined
