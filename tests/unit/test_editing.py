"""Editing: the guided samplers against oracle denoisers, then refine / inpaint / variations
on a tiny untrained DDPM (shapes, bit-exact kept pixels, determinism, refusals) and the
conversion of any picture to the model's frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fashiongen
from fashiongen import editing
from fashiongen.checkpoint import save_checkpoint
from fashiongen.cli import main
from fashiongen.config import SampleConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.images import to_model_range, to_uint8
from fashiongen.models import build_model
from fashiongen.models.base import Family
from fashiongen.models.ddpm import DDPM, DDPMConfig
from fashiongen.models.hybrid import combine
from fashiongen.samplers import NoiseSchedule, timesteps
from fashiongen.samplers.guided import (
    LANDWEBER_FORMS,
    RangeSpaceProjection,
    blur_gain,
    estimate_noise_sd,
    gaussian_blur,
    low_pass_guided,
    median3,
    range_null,
    repaint,
    repaint_path,
)

SHAPE = (1, 28, 28)
FEW_STEPS = SampleConfig(sampler="ddim", num_steps=3)


@pytest.fixture(scope="module")
def ddpm() -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(num_classes=3, base_width=8, num_levels=2), SHAPE).eval()


def family(name: str, **fields: object) -> Family:
    return build_model(config_from_dict({"model": {"name": name, **fields}}).model, SHAPE)


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- guided samplers


def test_gaussian_blur_keeps_constants_and_mass() -> None:
    flat = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.6), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[..., 10, 10] = 1
    blurred = gaussian_blur(spike, 1.6)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[..., 10, 10] < 0.1
    assert torch.equal(gaussian_blur(spike, 0), spike)


@pytest.mark.parametrize("form", LANDWEBER_FORMS)
def test_low_pass_guidance_moves_towards_consistency(form: str) -> None:
    truth = images(2)
    reference = gaussian_blur(truth, 1.6)
    target = median3(reference) if form == "deblur" else gaussian_blur(reference, 1.6)

    def zeros_oracle(x_t, t):
        return torch.zeros_like(x_t)

    t = torch.full((2,), 500)
    guided = low_pass_guided(zeros_oracle, reference, sigma=1.6, num_iterations=20, form=form)(
        truth, t
    )
    before = (gaussian_blur(torch.zeros_like(truth), 1.6) - target).norm()
    after = (gaussian_blur(guided, 1.6) - target).norm()
    assert after < 0.3 * before  # Landweber converges on what G passes


def test_low_pass_guidance_leaves_a_consistent_prediction_and_stops() -> None:
    flat = torch.full((2, 1, 12, 12), 0.3)

    def flat_oracle(x_t, t):
        return flat

    t = torch.full((2,), 500)
    for form in LANDWEBER_FORMS:
        guided = low_pass_guided(flat_oracle, flat, sigma=1.6, form=form)
        assert torch.allclose(guided(flat, t), flat, atol=1e-5)
    off = low_pass_guided(flat_oracle, torch.zeros_like(flat), sigma=1.6, weight=0)
    assert torch.equal(off(flat, t), flat)
    stopped = low_pass_guided(flat_oracle, torch.zeros_like(flat), sigma=1.6, t_stop=500)
    assert torch.equal(stopped(flat, t), flat)


def test_guidance_does_not_enforce_the_references_noise() -> None:
    """ILVR's form ignores what lies above G's band (a checkerboard); the deblurring form's
    median ignores isolated speckle: a clean prediction stays (nearly) as it is."""
    flat = torch.full((1, 1, 16, 16), -0.5)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checkerboard = flat + 0.5 * ((rows + cols) % 2 * 2 - 1).float()
    speckled = flat.clone()
    speckled[..., 3::6, 3::6] = 1.0
    t = torch.full((1,), 500)
    for form, reference in (("low-pass", checkerboard), ("deblur", speckled)):
        guided = low_pass_guided(lambda x_t, t: flat, reference, sigma=1.6, form=form)
        interior = (guided(flat, t) - flat)[..., 4:-4, 4:-4]  # the replicated edges aside
        assert interior.abs().max() < 0.05, form


def test_blur_gain_matches_the_blur_away_from_the_edges() -> None:
    """The Fourier gain is the separable blur's (a garment on black: no edge effects)."""
    x = torch.zeros(1, 1, 28, 28)
    x[..., 8:20, 10:18] = torch.rand(12, 8, generator=gen())
    gain = blur_gain(28, 28, 1.6)
    assert gain.max() == pytest.approx(1.0, abs=1e-6) and gain.min() > -1e-6
    in_fourier = torch.fft.ifft2(torch.fft.fft2(x) * gain).real
    # the separable blur truncates its kernel at 3 sigma, the Fourier gain does not
    assert torch.allclose(in_fourier, gaussian_blur(x, 1.6), atol=2e-3)


def test_range_space_projection_keeps_the_band_and_leaves_the_rest() -> None:
    """P(x0) agrees with y on the blur's range space (G P(x0) = y there), keeps x0's other
    frequencies, is idempotent, and leaves an x0 already consistent with y unchanged."""
    truth = torch.rand(2, 1, 28, 28, generator=gen(1)) * 2 - 1
    gain = blur_gain(28, 28, 1.6)
    blurred = torch.fft.ifft2(torch.fft.fft2(truth) * gain).real
    project = RangeSpaceProjection(blurred, sigma=1.6, threshold=0.3)
    assert torch.allclose(project(truth), truth, atol=1e-4)
    guess = torch.rand(2, 1, 28, 28, generator=gen(2)) * 2 - 1
    out = project(guess)
    band = gain > 0.3
    spectrum, wanted = torch.fft.fft2(out), torch.fft.fft2(truth)
    assert torch.allclose(spectrum[..., band], wanted[..., band], atol=1e-3)
    assert torch.allclose(spectrum[..., ~band], torch.fft.fft2(guess)[..., ~band], atol=1e-3)
    assert torch.allclose(project(out), out, atol=1e-4)


def smooth_garments(n: int = 4) -> torch.Tensor:
    """(n, 1, 28, 28) in [-1, 1]: blurred rectangles on black, no fine detail."""
    x = torch.full((n, 1, 28, 28), -1.0)
    for i in range(n):
        x[i, :, 4 + i : 24 - i, 6 : 22 - i] = 0.8 - 0.3 * i
    return gaussian_blur(x, 1.6)


def test_the_noise_estimate_reads_white_noise_and_not_a_blur() -> None:
    """Donoho's MAD estimate: about 0 for a smooth garment, sd s for white noise of sd s on
    it (196 diagonal coefficients an image: about 8% sampling error)."""
    clean = smooth_garments()
    assert float(estimate_noise_sd(clean).max()) < 0.01
    for sd in (0.05, 0.3):
        noisy = clean + sd * torch.randn(clean.shape, generator=gen(6))
        assert torch.allclose(estimate_noise_sd(noisy), torch.full((4,), sd), rtol=0.25)


def test_the_noise_aware_step_keeps_a_noisy_reference_s_noise_out() -> None:
    """DDNM+: with a noisy reference and a denoiser that knows the truth, plain DDNM ends
    on y/g (the noise amplified by 1/g in the range space) while the noise-aware step
    weighs the correction down where its noise would exceed the step's own and ends on the
    truth; a noise sd of 0 is plain DDNM, bit for bit."""
    schedule = NoiseSchedule("cosine", 100)
    truth = smooth_garments(2)
    gain = blur_gain(28, 28, 1.6)
    blurred = torch.fft.ifft2(torch.fft.fft2(truth) * gain).real
    noisy = blurred + 0.2 * torch.randn(truth.shape, generator=gen(7))

    def sample(noise_sd: torch.Tensor | None) -> torch.Tensor:
        projection = RangeSpaceProjection(noisy, sigma=1.6, threshold=0.5, noise_sd=noise_sd)
        x_start = torch.randn(truth.shape, generator=gen(8))
        return range_null(
            lambda x_t, t: truth.clone(),
            projection,
            x_start,
            schedule,
            num_steps=8,
            num_resamples=1,
            generator=gen(9),
        )

    def error(x: torch.Tensor) -> float:
        return float((x - truth).pow(2).mean().sqrt())

    plain, aware = sample(None), sample(estimate_noise_sd(noisy))
    assert error(aware) < 0.3 * error(plain)
    assert torch.equal(sample(torch.zeros(2)), plain)


def test_range_null_ends_consistent_and_counts_calls() -> None:
    """Whatever the denoiser predicts, DDNM's sample agrees with the reference on the range
    space; it calls the network once per downward move of the time-travel path, and the same
    generator gives the same sample."""
    schedule = NoiseSchedule("cosine", 100)
    truth = torch.rand(2, 1, 28, 28, generator=gen(3)) * 2 - 1
    gain = blur_gain(28, 28, 1.6)
    reference = torch.fft.ifft2(torch.fft.fft2(truth) * gain).real
    project = RangeSpaceProjection(reference, sigma=1.6, threshold=0.5)
    calls = []

    def oracle(x_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x_t)  # knows nothing: all structure comes from y

    def sample(**options) -> torch.Tensor:
        x_start = torch.randn(truth.shape, generator=gen(4))
        return range_null(
            oracle,
            project,
            x_start,
            schedule,
            num_steps=6,
            jump_length=3,
            num_resamples=2,
            generator=gen(5),
            **options,
        )

    out = sample()
    band = gain > 0.5
    assert torch.allclose(
        torch.fft.fft2(out)[..., band], torch.fft.fft2(truth)[..., band], atol=1e-3
    )
    path = repaint_path(6, 3, 2)
    assert len(calls) == sum(b > a for a, b in zip(path, path[1:], strict=False))
    assert torch.equal(out, sample())
    # guided while t > 40: the grid's steps below are walked once by the finishing sampler
    calls.clear()
    moves = []
    sample(t_stop=40, callback=lambda i, n: moves.append((i, n)))
    ts = timesteps(schedule, 6)
    guided = [t for t in ts if t > 40]
    path = repaint_path(len(guided), 3, 2)
    downs = sum(b > a for a, b in zip(path, path[1:], strict=False))
    assert len(calls) == downs + len(ts) - len(guided)
    assert [i for i, _ in moves] == list(range(len(moves)))
    assert {n for _, n in moves} == {len(moves)}


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ((4, 2, 2), [0, 1, 2, 0, 1, 2, 3, 4, 2, 3, 4]),
        ((3, 5, 3), [0, 1, 2, 3]),
        ((2, 1, 1), [0, 1, 2]),
    ],
)
def test_repaint_path(args: tuple[int, int, int], path: list[int]) -> None:
    assert repaint_path(*args) == path


@pytest.mark.parametrize("num_resamples", [1, 3])
def test_repaint_keeps_unmasked_pixels_and_counts_calls(num_resamples: int) -> None:
    schedule = NoiseSchedule("cosine", 100)
    known = images(2)
    mask = torch.zeros(2, 1, 28, 28, dtype=torch.bool)
    mask[..., 9:19, 9:19] = True
    calls = []

    def oracle(x_t, t):  # E[x0 | x_t] for x0 ~ N(0, 0.25) per pixel
        calls.append(int(t[0]))
        abar = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return abar.sqrt() * 0.25 / (abar * 0.25 + 1 - abar) * x_t

    out = repaint(
        oracle,
        known,
        mask,
        schedule,
        num_steps=6,
        jump_length=3,
        num_resamples=num_resamples,
        generator=gen(),
    )
    assert torch.equal(out[~mask], known[~mask])
    assert not torch.equal(out[mask], known[mask])
    path = repaint_path(6, 3, num_resamples)
    assert len(calls) == sum(b > a for a, b in zip(path, path[1:], strict=False))
    again = repaint(
        oracle,
        known,
        mask,
        schedule,
        num_steps=6,
        jump_length=3,
        num_resamples=num_resamples,
        generator=gen(),
    )
    assert torch.equal(out, again)


# ---------------------------------------------------------------- family entry points


def test_refine_shapes_range_and_seed(ddpm: DDPM) -> None:
    x = images(3)
    labels = torch.tensor([0, 1, 2])
    out = editing.refine(ddpm, x, 0.5, labels=labels, sampling=FEW_STEPS, generator=gen(1))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    again = editing.refine(ddpm, x, 0.5, labels=labels, sampling=FEW_STEPS, generator=gen(1))
    other = editing.refine(ddpm, x, 0.5, labels=labels, sampling=FEW_STEPS, generator=gen(2))
    assert torch.equal(out, again) and not torch.equal(out, other)
    plain = editing.refine(ddpm, x, 0.5, guidance=None, sampling=FEW_STEPS, generator=gen(1))
    assert plain.shape == x.shape
    for guided in (
        editing.Guidance(use_median=True),
        *(editing.Guidance(form=form) for form in LANDWEBER_FORMS),
    ):
        out = editing.refine(ddpm, x, 0.5, guidance=guided, sampling=FEW_STEPS, generator=gen(1))
        assert out.shape == x.shape and not torch.equal(out, plain)


def test_refine_reads_each_input_as_clean_or_noisy(ddpm: DDPM) -> None:
    """The default guidance projects a smooth (blurred) input itself and stops at its stop,
    and a noisy one's median, guided to the end; a batch holding both is refined in two
    groups, each image with its class."""
    smooth = smooth_garments(2)
    noisy = smooth + 0.4 * torch.randn(smooth.shape, generator=gen(10))
    x = torch.cat([noisy[:1], smooth[:1], noisy[1:], smooth[1:]])
    groups = editing._settings_per_input(
        editing._input_noise_sd(x, editing.Guidance()), editing.Guidance()
    )
    assert [group.tolist() for group, _ in groups] == [
        [False, True, False, True],
        [True, False, True, False],
    ]
    (_, clean), (_, denoising) = groups
    assert clean.use_median is False and clean.stop == editing.DEFAULT_GUIDANCE_STOP
    assert denoising.use_median is True and denoising.stop == editing.NOISY_INPUT_STOP
    assert (
        len(
            editing._settings_per_input(
                editing._input_noise_sd(x, editing.Guidance(use_median=False)),
                editing.Guidance(use_median=False),
            )
        )
        == 1
    )
    assert (
        len(
            editing._settings_per_input(
                editing._input_noise_sd(x, editing.Guidance(noise_sd=0.0)),
                editing.Guidance(noise_sd=0.0),
            )
        )
        == 1
    )
    labels = torch.tensor([0, 1, 2, 0])
    out = editing.refine(ddpm, x, 0.5, labels=labels, sampling=FEW_STEPS, generator=gen(1))
    again = editing.refine(ddpm, x, 0.5, labels=labels, sampling=FEW_STEPS, generator=gen(1))
    assert out.shape == x.shape and torch.equal(out, again)


def test_strength_zero_returns_the_input(ddpm: DDPM) -> None:
    x = images(2)
    assert torch.equal(editing.refine(ddpm, x, 0.0, sampling=FEW_STEPS), x)
    mask = torch.ones(2, 1, 28, 28, dtype=torch.bool)
    assert torch.equal(editing.inpaint(ddpm, x, mask, strength=0.0, sampling=FEW_STEPS), x)


def test_inpaint_keeps_unmasked_pixels_bit_for_bit(ddpm: DDPM) -> None:
    uint8 = to_uint8(images(2))
    x = to_model_range(uint8)
    mask = torch.zeros(2, 1, 28, 28, dtype=torch.bool)
    mask[..., 9:19, 9:19] = True
    out = editing.inpaint(
        ddpm,
        x,
        mask,
        labels=torch.tensor([0, 1]),
        sampling=FEW_STEPS,
        num_resamples=2,
        jump_length=2,
        generator=gen(),
    )
    assert torch.equal(out[~mask], x[~mask])
    assert torch.equal(to_uint8(out)[~mask], uint8[~mask])
    assert not torch.equal(out[mask], x[mask])


def test_variations_differ_from_each_other(ddpm: DDPM) -> None:
    out = editing.variations(
        ddpm, images(1)[0], 4, 0.6, label=2, sampling=FEW_STEPS, generator=gen()
    )
    assert out.shape == (4, *SHAPE)
    assert not torch.equal(out[0], out[1])


def test_hybrid_edits_within_its_strength() -> None:
    ddpm = DDPM(DDPMConfig(base_width=8), SHAPE)
    hybrid = combine(family("dcgan", g_width=8), ddpm, max_strength=0.5)
    assert editing.can_edit(hybrid)
    out = editing.refine(hybrid, images(1), 0.3, sampling=FEW_STEPS, generator=gen())
    assert out.shape == (1, *SHAPE)
    with pytest.raises(ConfigError, match="highest this model"):
        editing.refine(hybrid, images(1), 0.9, sampling=FEW_STEPS)


@pytest.mark.parametrize("name", ["vae", "dcgan", "gan"])
def test_families_without_a_denoiser_refuse(name: str) -> None:
    model = family(name)
    assert not editing.can_edit(model)
    with pytest.raises(ConfigError, match=f"the {name} family cannot edit images"):
        editing.refine(model, images(1), 0.5)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_the_range_is_refused(ddpm: DDPM, strength: float) -> None:
    with pytest.raises(ConfigError, match="strength must lie in"):
        editing.refine(ddpm, images(1), strength)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sigma", 0.0, "sigma must lie"),
        ("weight", 2.0, "weight must lie"),
        ("num_iterations", 0, "iterations must be"),
        ("stop", 1.5, "stop must lie"),
        ("form", "sharpen", "form must be one of range-null, deblur, low-pass"),
        ("threshold", 1.0, "threshold must lie"),
        ("num_resamples", 0, "must be >= 1"),
        ("noise_sd", -0.1, "noise_sd must lie"),
    ],
)
def test_bad_guidance_is_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        editing.Guidance(**{field: value})


def test_bad_shapes_are_refused(ddpm: DDPM) -> None:
    with pytest.raises(ConfigError, match="fit_to_frame"):
        editing.refine(ddpm, torch.zeros(1, 3, 32, 32), 0.5)
    with pytest.raises(ConfigError, match="mask must be"):
        editing.inpaint(ddpm, images(1), torch.zeros(1, 1, 5, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="labels must lie"):
        editing.refine(ddpm, images(1), 0.5, labels=torch.tensor([7]))


# ---------------------------------------------------------------- input conversion


def test_a_photo_on_white_is_inverted_cropped_and_centred() -> None:
    photo = Image.new("RGB", (120, 60), "white")
    photo.paste((20, 20, 20), (30, 10, 90, 40))  # a dark 60x30 garment
    array, framing = editing.fit_to_frame(photo, SHAPE)
    assert array.shape == SHAPE and array.dtype == np.uint8
    assert framing.inverted and framing.crop == (30, 10, 90, 40)
    assert framing.fitted_size == (28, 14)
    rows = np.nonzero(array[0].max(axis=1) > 200)[0]
    assert rows.min() == 7 and rows.max() == 20  # centred vertically
    assert array[0, 0, 0] == 0
    assert "inverted" in framing.describe() and "28x14" in framing.describe()


def test_a_dataset_sized_image_is_used_as_it_is() -> None:
    picture = np.zeros((28, 28), dtype=np.uint8)
    picture[5:20, 8:12] = 180
    array, framing = editing.fit_to_frame(Image.fromarray(picture), SHAPE)
    assert np.array_equal(array[0], picture)
    assert framing.describe() == "28x28, used as it is"


def test_a_transparent_sketch_becomes_light_strokes_on_black() -> None:
    sketch = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    sketch.paste((0, 0, 0, 255), (40, 90, 160, 110))  # a dark stroke
    array, framing = editing.fit_to_frame(sketch, SHAPE)
    assert framing.inverted
    assert array.max() == 255 and array[0, 0, 0] == 0


def test_a_mask_follows_the_framing_or_is_refused() -> None:
    photo = Image.new("L", (56, 56), 255)
    photo.paste(0, (0, 0, 56, 56))
    _, framing = editing.fit_to_frame(photo, SHAPE)
    small = Image.new("L", (28, 28), 0)
    small.paste(255, (0, 0, 14, 28))
    assert editing.mask_to_frame(small, framing)[0, :, :14].all()
    big = Image.new("L", (56, 56), 255)
    assert editing.mask_to_frame(big, framing).all()
    with pytest.raises(ConfigError, match="the mask is 30x30"):
        editing.mask_to_frame(Image.new("L", (30, 30)), framing)


# ---------------------------------------------------------------- the edit command


@pytest.fixture(scope="module")
def edit_files(tmp_path_factory) -> Path:
    """A tiny conditional DDPM checkpoint, a sketch, a mask and a file that is no image."""
    folder = tmp_path_factory.mktemp("edit")
    cfg = config_from_dict(
        {
            "model": {"name": "ddpm", "base_width": 8, "num_classes": 10},
            "data": {"name": "synthetic"},
            "sample": {"num_steps": 2},
        }
    )
    torch.manual_seed(0)
    save_checkpoint(folder / "ddpm", model=build_model(cfg.model, SHAPE), config=cfg, step=0)
    vae_cfg = config_from_dict({"model": {"name": "vae"}, "data": {"name": "synthetic"}})
    save_checkpoint(folder / "vae", model=build_model(vae_cfg.model, SHAPE), config=vae_cfg, step=0)
    sketch = Image.new("RGB", (90, 60), "white")
    sketch.paste((0, 0, 0), (10, 20, 80, 45))
    sketch.save(folder / "sketch.png")
    Image.new("L", (28, 28), 0).save(folder / "mask.png")
    mask = Image.new("L", (28, 28), 0)
    mask.paste(255, (9, 9, 19, 19))
    mask.save(folder / "hole.png")
    Image.new("L", (30, 30), 255).save(folder / "mask30.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_edit_writes_like_sample(edit_files: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "edits.npz"
    assert (
        main(
            [
                "edit",
                str(edit_files / "sketch.png"),
                "--model",
                str(edit_files / "ddpm"),
                "--strength",
                "0.5",
                "--class",
                "3",
                "--variations",
                "3",
                "--seed",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "light background inverted to black" in printed and "wrote 3 edited" in printed
    with np.load(out) as arrays:
        assert arrays["images"].shape == (3, *SHAPE) and list(arrays["labels"]) == [3, 3, 3]
    grid = tmp_path / "holes.png"
    assert (
        main(
            [
                "edit",
                str(edit_files / "sketch.png"),
                "--model",
                str(edit_files / "ddpm"),
                "--mask",
                str(edit_files / "hole.png"),
                "--out",
                str(grid),
            ]
        )
        == 0
    )
    assert Image.open(grid).size == (64, 64)  # one 28x28 tile, 2 px padding each side, 2x


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["broken.png"], "error: cannot read input {T}/broken.png: cannot identify image file"),
        (["missing.png"], "error: cannot read input {T}/missing.png: no such file"),
        (["sketch.png", "--mask", "mask30.png"], "error: the mask is 30x30: it must be 28x28"),
        (["sketch.png", "--strength", "0"], "error: --strength must lie in (0, 1], got 0.0"),
        (["sketch.png", "--strength", "1.5"], "error: --strength must lie in (0, 1], got 1.5"),
        (["sketch.png", "--model", "{T}/vae"], "error: the vae family cannot edit images"),
        (["sketch.png", "--class", "nope"], "error: unknown class 'nope'"),
    ],
)
def test_edit_refuses_in_one_line(
    edit_files: Path, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    args = [a.format(T=edit_files) if "{T}" in a else a for a in args]
    model = [] if "--model" in args else ["--model", str(edit_files / "ddpm")]
    files = [str(edit_files / a) if a.endswith(".png") else a for a in args]
    assert main(["edit", *files, *model, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(T=edit_files)) and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_the_public_api_edits(edit_files: Path) -> None:
    model = fashiongen.load(edit_files / "ddpm")
    refined = model.refine(edit_files / "sketch.png", 0.5, classes="3", seed=1)
    assert refined.images.shape == (1, *SHAPE) and list(refined.labels) == [3]
    mask = np.zeros((1, 1, 28, 28), dtype=bool)
    mask[..., 9:19, 9:19] = True
    filled = model.inpaint(refined.images, mask)
    keep = ~np.broadcast_to(mask, filled.images.shape)
    assert np.array_equal(filled.images[keep], refined.images[keep])
    assert model.variations(refined.images, 3, 0.4).images.shape == (3, *SHAPE)
