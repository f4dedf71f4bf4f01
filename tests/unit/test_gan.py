"""The fully connected GAN family: config, shapes, labels, determinism, and a toy it must learn."""

import copy

import pytest
import torch

from fashiongen.config import TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS
from fashiongen.models.gan import GAN, GANConfig

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def _model(num_classes=0, shape=(1, 28, 28), **fields):
    torch.manual_seed(0)
    return GAN(GANConfig(num_classes=num_classes, **fields), shape)


def _batch(shape, n=8, num_classes=10):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, *shape, generator=g) * 2 - 1,
        torch.randint(num_classes, (n,), generator=g),
    )


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_registered_and_configurable_from_toml_data():
    assert MODELS["gan"] is GAN
    cfg = config_from_dict({"model": {"name": "gan", "latent_dim": 8, "use_batchnorm": False}})
    assert cfg.model == GANConfig(latent_dim=8, use_batchnorm=False)


@pytest.mark.parametrize(
    "fields",
    [
        {"latent_dim": 0},
        {"g_width": 0},
        {"num_layers": 0},
        {"dropout": 1.0},
        {"label_smoothing": 0.5},
        {"num_classes": -1},
    ],
)
def test_config_rejects_bad_values(fields):
    with pytest.raises(ConfigError):
        GANConfig(**fields)


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("shape", SHAPES)
def test_train_step_and_sample_shapes(shape, num_classes):
    model = _model(num_classes, shape)
    losses = model.train_step(_batch(shape), model.make_optimizers(TrainConfig()))
    assert {"d_loss", "g_loss"} <= losses.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    x0 = model.sample(3, generator=_seeded(0))
    assert x0.shape == (3, *shape)
    assert x0.dtype == torch.float32
    assert x0.min() >= -1
    assert x0.max() <= 1


@pytest.mark.parametrize("num_classes", [0, 10])
def test_sample_depends_only_on_the_generator_seed(num_classes):
    model = _model(num_classes)
    assert torch.equal(model.sample(4, generator=_seeded(1)), model.sample(4, generator=_seeded(1)))
    assert not torch.equal(
        model.sample(4, generator=_seeded(1)), model.sample(4, generator=_seeded(2))
    )


def test_conditional_labels_steer_and_are_validated():
    model = _model(10)
    a = model.sample(2, labels=torch.tensor([0, 0]), generator=_seeded(0))
    b = model.sample(2, labels=torch.tensor([9, 9]), generator=_seeded(0))
    assert not torch.equal(a, b), "same z, other class: another image"
    with pytest.raises(ConfigError):
        model.sample(1, labels=torch.tensor([10]))
    with pytest.raises(ConfigError):
        _model(0).sample(1, labels=torch.tensor([1]))


def test_unconditional_model_ignores_training_labels():
    model = _model(0)
    x0, _ = _batch((1, 28, 28))
    losses = model.train_step((x0, torch.full((8,), 123)), model.make_optimizers(TrainConfig()))
    assert torch.isfinite(torch.tensor(losses["d_loss"]))


@pytest.mark.parametrize("training", [True, False])
def test_sample_restores_the_mode(training):
    model = _model(10).train(training)
    model.sample(2)
    assert all(m.training == training for m in model.modules())


def test_train_step_draws_from_the_global_rng():
    """The loop saves and restores the global RNG for exact resumption."""
    a = _model(10)
    b = copy.deepcopy(a)
    opt_a, opt_b = a.make_optimizers(TrainConfig()), b.make_optimizers(TrainConfig())
    torch.manual_seed(5)
    losses_a = a.train_step(_batch((1, 28, 28)), opt_a)
    torch.manual_seed(5)
    losses_b = b.train_step(_batch((1, 28, 28)), opt_b)
    assert losses_a == losses_b
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_learns_a_single_pattern():
    """With every real image equal to one pattern, G must collapse onto it."""
    shape = (1, 8, 8)
    pattern = torch.where(torch.arange(64).view(shape) % 3 == 0, 0.9, -0.9)
    model = _model(0, shape, latent_dim=8, g_width=32, d_width=32, num_layers=2, dropout=0.0)
    optimizers = model.make_optimizers(TrainConfig(lr=1e-3))
    x0, labels = pattern.expand(32, *shape).contiguous(), torch.zeros(32, dtype=torch.long)

    def distance():
        return (model.sample(64, generator=_seeded(0)) - pattern).abs().mean().item()

    before = distance()
    for _ in range(300):
        model.train_step((x0, labels), optimizers)
    after = distance()
    assert after < 0.15, (before, after)
    assert after < before / 4, (before, after)
