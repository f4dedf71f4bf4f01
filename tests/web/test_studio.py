"""The studio's logic without a browser or Gradio: grids, bounds, classes, interpolation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fashiongen.cli import main
from fashiongen.errors import ConfigError
from fashiongen.generate import generate, slerp
from fashiongen.images import make_grid, to_pil
from fashiongen.web.studio import MAX_IMAGES, MAX_STEPS, Studio, grid_size, zoo_models

SHAPE = (1, 28, 28)
SAMPLING = ("ddim", 3, 1.0, 0.5)  # sampler, steps, guidance, strength


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second OpenMP thread only waits for a busy core (see test_ddpm)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def studio(conditional_checkpoint, unconditional_checkpoint) -> Studio:
    return Studio({"cond": conditional_checkpoint, "uncond": unconditional_checkpoint})


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as f:
        return {k: f[k] for k in f.files}


def test_grid_equals_the_libraries_samples(studio):
    grid = studio.generate_grid("cond", "any", 3, 9, *SAMPLING)
    model, _ = studio.load("cond")
    expected = generate(model, 9, seed=3)
    arrays = npz_arrays(grid.npz)
    assert grid.image.size == grid_size(9, SHAPE) == (2 * (3 * 30 + 2),) * 2
    assert np.array_equal(arrays["images"], expected.numpy())
    assert np.array_equal(np.asarray(grid.image), np.asarray(to_pil(make_grid(expected), 2)))
    random_labels = torch.randint(10, (9,), generator=torch.Generator().manual_seed(3))
    assert arrays["labels"].tolist() == random_labels.tolist()
    assert len(arrays["class_names"]) == 10


def test_a_chosen_class_fills_the_grid(studio):
    arrays = npz_arrays(studio.generate_grid("cond", "7", 0, 5, *SAMPLING).npz)
    assert arrays["labels"].tolist() == [7] * 5


def test_same_seed_same_grid_and_models_load_once(studio):
    a = studio.generate_grid("cond", "any", 1, 4, *SAMPLING)
    b = studio.generate_grid("cond", "any", 1, 4, *SAMPLING)
    assert a.npz == b.npz
    assert studio.load("cond")[0] is studio.load("cond")[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_images": MAX_IMAGES + 1}, f"number of images must be between 1 and {MAX_IMAGES}"),
        ({"num_images": 0}, "number of images must be between 1"),
        ({"num_images": 2.5}, "whole number"),
        ({"num_images": None}, "number of images is required"),
        ({"steps": MAX_STEPS + 1}, f"sampling steps must be between 1 and {MAX_STEPS}"),
        ({"seed": -1}, "seed must be between 0"),
        ({"sampler": "euler"}, "unknown sampler 'euler'"),
        ({"guidance": float("nan")}, "guidance scale must be a number"),
        ({"guidance": 51.0}, "guidance_scale must lie in"),
        ({"strength": 1.5}, "strength must lie in"),
        ({"class_name": "hat"}, "unknown class 'hat'"),
        ({"model_key": "nope"}, "unknown model 'nope'"),
    ],
)
def test_out_of_bound_requests_are_refused(studio, changes, message):
    request = {
        "model_key": "cond",
        "class_name": "any",
        "seed": 0,
        "num_images": 4,
        "sampler": "ddim",
        "steps": 3,
        "guidance": 1.0,
        "strength": 0.5,
        **changes,
    }
    with pytest.raises(ConfigError, match=message):
        studio.generate_grid(**request)


def test_unconditional_model_has_no_classes(studio):
    assert studio.info("uncond").class_names == []
    assert "labels" not in npz_arrays(studio.generate_grid("uncond", "any", 0, 2, *SAMPLING).npz)
    with pytest.raises(ConfigError, match="unconditional"):
        studio.generate_grid("uncond", "Sneaker", 0, 2, *SAMPLING)


def test_gan_ignores_sampling_and_diffusion_reports_progress(studio, make_checkpoint):
    info = studio.info("cond")
    assert (info.family, info.uses_sampler, info.uses_strength) == ("dcgan", False, False)
    a = studio.generate_grid("cond", "any", 0, 2, "ddim", 3, 1.0, 0.5)
    b = studio.generate_grid("cond", "any", 0, 2, "dpmpp_2m", 9, 3.0, 0.1)
    assert a.npz == b.npz

    ddpm = Studio({"ddpm": make_checkpoint({"name": "ddpm", "base_width": 8, "num_classes": 10})})
    assert ddpm.info("ddpm").uses_sampler and not ddpm.info("ddpm").uses_strength
    calls = []
    grid = ddpm.generate_grid(
        "ddpm",
        "3",
        0,
        2,
        "ddim",
        3,
        2.0,
        0.5,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert grid.image.size == grid_size(2, SHAPE)


def test_hybrid_strength_is_checked_by_the_family(make_checkpoint):
    studio = Studio(
        {
            "hybrid": make_checkpoint(
                {
                    "name": "hybrid",
                    "gan": {"name": "dcgan", "g_width": 8, "d_width": 8},
                    "refiner": {"base_width": 8},
                }
            )
        }
    )
    assert studio.info("hybrid").uses_strength
    assert studio.generate_grid("hybrid", "any", 0, 2, "ddim", 2, 1.0, 0.2).image.size == grid_size(
        2, SHAPE
    )
    with pytest.raises(ConfigError, match="strength"):
        studio.generate_grid("hybrid", "any", 0, 2, "ddim", 2, 1.0, 0.9)


def test_the_guide_scale_is_the_models_own_unless_asked(autoguided_checkpoint, make_checkpoint):
    studio = Studio(
        {
            "guided": autoguided_checkpoint,
            "plain": make_checkpoint({"name": "ddpm", "base_width": 8, "num_classes": 10}),
        }
    )
    assert studio.info("guided").uses_guide and studio.info("guided").sampling.guide_scale == 2.5
    assert not studio.info("plain").uses_guide
    request = ("guided", "3", 0, 2, "ddim", 2, 1.0, 0.5)
    own = studio.generate_grid(*request).npz
    assert studio.generate_grid(*request, 2.5).npz == own
    assert studio.generate_grid(*request, 1.0).npz != own  # 1: autoguidance off
    strip = studio.interpolate("guided", "3", 0, 1, 2, "ddim", 2, 1.0, 0.5, 1.0)
    assert strip.image.width > 0
    with pytest.raises(ConfigError, match="no guide"):
        studio.generate_grid("plain", "3", 0, 2, "ddim", 2, 1.0, 0.5, 2.0)
    for bad, message in ((-1.0, "guide_scale must lie"), (float("nan"), "guide scale must be")):
        with pytest.raises(ConfigError, match=message):
            studio.generate_grid(*request, bad)


def test_interpolation_through_latents(studio):
    strip = studio.interpolate("cond", "8", 0, 1, 5, *SAMPLING)
    assert "Spherical interpolation" in strip.note
    assert strip.image.size == grid_size(5, SHAPE, num_rows=1)
    tile = grid_size(1, SHAPE)[0]  # the first and last frames are seed A's and seed B's
    for seed, columns in ((0, slice(None, tile)), (1, slice(-tile, None))):
        single = studio.generate_grid("cond", "8", seed, 1, *SAMPLING).image
        difference = np.abs(
            np.asarray(strip.image)[:, columns].astype(int) - np.asarray(single).astype(int)
        )
        assert difference.max() <= 2  # slerp's end points equal the seeds' latents to 1 ulp


def test_slerp_keeps_endpoints_and_norm():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 512, generator=gen)
    path = [slerp(a, b, w) for w in (0.0, 0.5, 1.0)]
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert abs(path[1].norm() / a.norm() - 1) < 0.05
    assert torch.allclose(slerp(a, a, 0.5), a, atol=1e-5)


def test_checkpoints_given_come_before_the_zoo(conditional_checkpoint):
    studio = Studio.from_sources([conditional_checkpoint])
    assert studio.keys[0] == str(conditional_checkpoint)
    assert studio.keys[1:] == [k for k in zoo_models() if k != str(conditional_checkpoint)]


def test_no_models_or_a_bad_path_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no models to serve"):
        Studio({})
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    if not zoo_models():  # with a zoo, `serve` alone would start serving it
        assert main(["serve"]) == 2
        assert "no models to serve" in capsys.readouterr().err
