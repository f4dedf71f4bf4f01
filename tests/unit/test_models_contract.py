"""The family contract, checked for every entry of MODELS (STYLE.md, 'Test the contract')."""

import dataclasses

import pytest
import torch

from fashiongen.checkpoint import load_model, save_checkpoint
from fashiongen.config import TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS, build_model
from fashiongen.models.base import (
    Autoencoder,
    Diffusion,
    DraftRefiner,
    GenerativeModel,
    Samplable,
    Student,
    Trainable,
)

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
CAPABILITIES = (Autoencoder, Diffusion, DraftRefiner, Student)
# What each family claims beyond the two sides; a new family must say what it offers.
CLAIMS = {
    "dcgan": (),
    "gan": (),
    "vae": (Autoencoder,),
    "ddpm": (Diffusion,),
    "hybrid": (DraftRefiner,),
    "distilled": (Diffusion, Student),  # a DDPM's denoiser that samples in its own K steps
}
# Settings that build every training-only module a family can have.
WITH_EVERY_MODULE = {
    "dcgan": {"d_reversion": True},
    "hybrid": {"gan": {"name": "dcgan", "d_reversion": True}},
    "distilled": {"teacher_guide_scale": 2.0, "adversarial_weight": 0.1},  # guide, D
}


def _build(name, num_classes=0, shape=(1, 28, 28), seed=0, **model):
    torch.manual_seed(seed)
    cfg = config_from_dict(
        {"model": {"name": name, "num_classes": num_classes, **model}, "sample": {"num_steps": 4}}
    )
    return build_model(cfg.model, shape), cfg


def _batch(shape, n=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *shape, generator=g) * 2 - 1, torch.randint(10, (n,), generator=g)


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_key_matches_config(name):
    assert MODELS[name].Config().name == name
    model, _ = _build(name)
    assert isinstance(model, GenerativeModel)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("name", list(MODELS))
def test_train_step_gives_finite_losses(name, num_classes, shape):
    model, _ = _build(name, num_classes, shape)
    optimizers = model.make_optimizers(TrainConfig())
    losses = model.train_step(_batch(shape), optimizers)
    assert losses and all(isinstance(v, float) for v in losses.values())
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    again = model.train_step(_batch(shape), optimizers)
    assert again.keys() == losses.keys(), "every step must return the same keys"


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("name", list(MODELS))
def test_sample_shape_range_and_seed(name, num_classes):
    model, cfg = _build(name, num_classes)
    x0 = model.sample(5, generator=torch.Generator().manual_seed(3), sampling=cfg.sample)
    assert x0.shape == (5, 1, 28, 28) and x0.dtype == torch.float32
    assert x0.min() >= -1 and x0.max() <= 1
    again = model.sample(5, generator=torch.Generator().manual_seed(3), sampling=cfg.sample)
    assert torch.equal(x0, again)
    other = model.sample(5, generator=torch.Generator().manual_seed(4), sampling=cfg.sample)
    assert not torch.equal(x0, other)
    assert model.training, "sample must restore the training mode"


@pytest.mark.parametrize("name", list(MODELS))
def test_conditional_labels(name):
    model, cfg = _build(name, 10)
    labels = torch.tensor([7, 7, 0])
    assert model.sample(3, labels=labels, sampling=cfg.sample).shape[0] == 3
    with pytest.raises(ConfigError):
        model.sample(1, labels=torch.tensor([10]), sampling=cfg.sample)
    unconditional, _ = _build(name, 0)
    with pytest.raises(ConfigError, match="unconditional"):
        unconditional.sample(1, labels=torch.tensor([1]), sampling=cfg.sample)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_round_trip(name, tmp_path):
    model, cfg = _build(name, 10)
    model.train_step(_batch((1, 28, 28)), model.make_optimizers(TrainConfig()))
    save_checkpoint(tmp_path / "ck", model=model, config=cfg, step=1)
    loaded, _ = load_model(tmp_path / "ck")
    labels = torch.tensor([1, 2, 3])
    a = model.eval().sample(
        3, labels=labels, generator=torch.Generator().manual_seed(0), sampling=cfg.sample
    )
    b = loaded.sample(
        3, labels=labels, generator=torch.Generator().manual_seed(0), sampling=cfg.sample
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(MODELS))
def test_both_sides_and_exactly_the_claimed_capabilities(name):
    model, _ = _build(name)
    assert isinstance(model, Trainable) and isinstance(model, Samplable)
    assert name in CLAIMS, f"say in CLAIMS which capabilities {name} offers"
    for capability in CAPABILITIES:
        assert isinstance(model, capability) == (capability in CLAIMS[name]), capability
    # The settings a family heeds agree with what it can do.
    assert ("strength" in model.sampling_fields) == isinstance(model, DraftRefiner)
    assert bool(model.sampling_fields) == (
        isinstance(model, Diffusion | DraftRefiner) and not isinstance(model, Student)
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_default_sampling_runs_every_sampling_network(name):
    model, _ = _build(name, 10)
    called = set()
    for module_name in model.ema_module_names:
        model.get_submodule(module_name).register_forward_pre_hook(
            lambda *_, module_name=module_name: called.add(module_name)
        )
    sampling = model.default_sampling()
    x0 = model.sample(
        2,
        generator=torch.Generator().manual_seed(0),
        sampling=dataclasses.replace(sampling, num_steps=2),
    )
    assert x0.shape == (2, 1, 28, 28)
    assert called == set(model.ema_module_names)
    assert model.num_network_evaluations(sampling) >= 1


@pytest.mark.parametrize("name", list(MODELS))
def test_training_only_modules_are_not_needed_to_sample(name):
    model, cfg = _build(name, 10, **WITH_EVERY_MODULE.get(name, {}))
    model.train_step(_batch((1, 28, 28)), model.make_optimizers(TrainConfig()))
    kept = {k: v for k, v in model.state_dict().items() if model.needed_for_sampling(k)}
    modules = dict(model.named_modules())
    for module_name in model.training_only_modules:
        assert module_name in modules
        assert not any(k.startswith(f"{module_name}.") for k in kept)
    assert not set(model.training_only_modules) & set(model.ema_module_names)
    fresh, _ = _build(name, 10, seed=1, **WITH_EVERY_MODULE.get(name, {}))
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    assert not unexpected and all(not model.needed_for_sampling(k) for k in missing)
    labels = torch.tensor([1, 2])
    a, b = (
        m.eval().sample(
            2, labels=labels, generator=torch.Generator().manual_seed(0), sampling=cfg.sample
        )
        for m in (model, fresh)
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_sampling_only_after_loading(name, tmp_path):
    model, cfg = _build(name)
    assert model.checkpoint_sampling is None
    save_checkpoint(tmp_path / "ck", model=model, config=cfg, step=0)
    loaded, _ = load_model(tmp_path / "ck")
    assert loaded.checkpoint_sampling == cfg.sample


def test_autoencoder_capability():
    model, _ = _build("vae", 10)
    x0, labels = _batch((1, 28, 28), n=4)
    mu, logvar = model.encode(x0, labels[:4])
    assert mu.shape == logvar.shape == (4, model.config.latent_dim)
    for images in (model.decode(mu, labels[:4]), model.reconstruct(x0, labels[:4])):
        assert images.shape == x0.shape and images.min() >= -1 and images.max() <= 1


def test_diffusion_capability():
    model, _ = _build("ddpm", 10)
    x_t, labels = _batch((1, 28, 28), n=4)
    t = torch.tensor([0, 1, model.max_timestep // 2, model.max_timestep])
    x0_pred = model.denoise(x_t, t, labels[:4], guidance_scale=2.0)
    assert x0_pred.shape == x_t.shape and x0_pred.min() >= -1 and x0_pred.max() <= 1
    assert model.max_timestep == model.num_timesteps - 1 == model.schedule.num_timesteps - 1


def test_draft_refiner_capability():
    model, _ = _build("hybrid", max_strength=0.4)
    assert model.max_strength == 0.4 and isinstance(model.refiner, Diffusion)
    assert model.t_start(0) == 0
    assert 0 < model.t_start(model.max_strength) <= model.refiner.max_timestep
    assert model.default_sampling().strength <= model.max_strength
    with pytest.raises(ConfigError, match="strength"):
        model.t_start(0.5)
