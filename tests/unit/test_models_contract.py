"""The family contract, checked for every entry of MODELS (STYLE.md, 'Test the contract')."""

import pytest
import torch

from fashiongen.checkpoint import load_model, save_checkpoint
from fashiongen.config import TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS, build_model
from fashiongen.models.base import GenerativeModel

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def _build(name, num_classes=0, shape=(1, 28, 28)):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": name, "num_classes": num_classes},
                            "sample": {"num_steps": 4}})
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
    a = model.eval().sample(3, labels=labels, generator=torch.Generator().manual_seed(0),
                            sampling=cfg.sample)
    b = loaded.sample(3, labels=labels, generator=torch.Generator().manual_seed(0),
                      sampling=cfg.sample)
    assert torch.equal(a, b)
