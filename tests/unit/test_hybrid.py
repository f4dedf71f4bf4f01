"""The hybrid family: GAN draft, truncated diffusion refiner."""

import pytest
import torch

from fashiongen.config import SampleConfig, TrainConfig, config_from_dict, to_toml
from fashiongen.errors import ConfigError
from fashiongen.models import build_model
from fashiongen.models.hybrid import combine

SMALL = {
    "name": "hybrid",
    "gan": {"name": "dcgan", "g_width": 8, "d_width": 8},
    "refiner": {"base_width": 8},
    "max_strength": 0.4,
}


def _hybrid(**changes):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {**SMALL, **changes}})
    return build_model(cfg.model, (1, 28, 28)), cfg


def test_nested_config_round_trips_through_toml():
    import tomllib

    _, cfg = _hybrid()
    text = to_toml(cfg)
    assert "[model.gan]" in text and "[model.refiner]" in text
    assert config_from_dict(tomllib.loads(text)) == cfg
    assert cfg.model.t_max == 399


def test_nested_overrides_and_errors():
    from fashiongen.config import merge_overrides

    cfg = config_from_dict(merge_overrides({"model": SMALL}, ["model.gan.g_width=4"]))
    assert cfg.model.gan.g_width == 4
    with pytest.raises(ConfigError, match="model.gan.nope"):
        config_from_dict(merge_overrides({"model": SMALL}, ["model.gan.nope=1"]))
    with pytest.raises(ConfigError, match="model.gan.name"):
        config_from_dict({"model": {**SMALL, "gan": {"name": "vae"}}})


def test_refiner_only_learns_truncated_steps():
    model, _ = _hybrid()
    assert model.refiner.max_timestep == 399
    seen = []
    q_sample = model.refiner.schedule.q_sample

    def spy(x0, t, eps):
        seen.append(t)
        return q_sample(x0, t, eps)

    model.refiner.schedule.q_sample = spy
    batch = (torch.rand(256, 1, 28, 28) * 2 - 1, torch.zeros(256, dtype=torch.long))
    model.train_step(batch, model.make_optimizers(TrainConfig()))
    t = torch.cat(seen)
    assert t.max() <= 399 and t.max() > 300, "t drawn from 0..t_max only"


def test_strength_zero_returns_the_draft_exactly():
    model, _ = _hybrid()
    sampling = SampleConfig(strength=0.0, num_steps=5)
    hybrid = model.sample(4, generator=torch.Generator().manual_seed(2), sampling=sampling)
    draft = model.gan.sample(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(hybrid, draft)
    refined = model.sample(
        4,
        generator=torch.Generator().manual_seed(2),
        sampling=SampleConfig(strength=0.3, num_steps=5),
    )
    assert not torch.equal(refined, draft)


def test_strength_above_the_trained_range_is_refused():
    model, _ = _hybrid()
    with pytest.raises(ConfigError, match="strength"):
        model.sample(1, sampling=SampleConfig(strength=0.9))


def test_network_evaluations_are_counted():
    model, _ = _hybrid()
    assert model.num_network_evaluations(SampleConfig(strength=0.0, num_steps=10)) == 1
    assert model.num_network_evaluations(SampleConfig(strength=0.3, num_steps=10)) == 11
    assert model.num_network_evaluations(SampleConfig(strength=0.002, num_steps=10)) == 1 + 3


def test_combine_existing_models():
    torch.manual_seed(0)
    gan = build_model(
        config_from_dict({"model": {"name": "dcgan", "g_width": 8}}).model, (1, 28, 28)
    )
    ddpm = build_model(
        config_from_dict({"model": {"name": "ddpm", "base_width": 8}}).model, (1, 28, 28)
    )
    hybrid = combine(gan, ddpm, max_strength=0.5)
    draft = hybrid.sample(
        3, generator=torch.Generator().manual_seed(0), sampling=SampleConfig(strength=0.0)
    )
    assert torch.equal(draft, gan.sample(3, generator=torch.Generator().manual_seed(0)))
    other = build_model(
        config_from_dict({"model": {"name": "ddpm", "base_width": 8}}).model, (3, 32, 32)
    )
    with pytest.raises(ConfigError, match="image shapes differ"):
        combine(gan, other)


def test_combine_command_writes_a_sampleable_hybrid(tmp_path):
    from fashiongen.cli import main

    # the dcgan preset compiles its networks; tiny runs skip it (tests/unit/test_train.py
    # tests compiling)
    tiny = [
        "--set",
        "train.compile=false",
        "--data",
        "synthetic",
        "--max-steps",
        "2",
        "--no-progress",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.use_tensorboard=false",
        "--set",
        "model.num_classes=10",
        "--set",
        "sample.num_steps=2",
    ]
    assert (
        main(
            [
                "train",
                "--model",
                "dcgan",
                "--set",
                "model.g_width=8",
                "--set",
                "model.d_width=8",
                "--out",
                str(tmp_path / "g"),
                *tiny,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--model",
                "ddpm",
                "--set",
                "model.base_width=8",
                "--out",
                str(tmp_path / "d"),
                *tiny,
            ]
        )
        == 0
    )
    assert (
        main(["combine", str(tmp_path / "g"), str(tmp_path / "d"), "--out", str(tmp_path / "h")])
        == 0
    )
    out = tmp_path / "h.npz"
    assert (
        main(
            [
                "sample",
                str(tmp_path / "h"),
                "--num-samples",
                "3",
                "--class",
                "disc",
                "--steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (
        main(["sample", str(tmp_path / "h"), "--strength", "0.9", "--out", str(tmp_path / "x.png")])
        == 2
    )  # beyond what the refiner learned
    from fashiongen.checkpoint import load_model

    assert load_model(tmp_path / "h")[1].config.sample.strength == 0.25
    assert (
        main(
            [
                "combine",
                str(tmp_path / "g"),
                str(tmp_path / "d"),
                "--max-strength",
                "0.6",
                "--strength",
                "0.4",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "h2"),
            ]
        )
        == 0
    )
    sampling = load_model(tmp_path / "h2")[1].config.sample
    assert (sampling.strength, sampling.num_steps) == (0.4, 3)
