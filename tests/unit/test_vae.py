"""The convolutional VAE family: config, likelihoods, KL warm-up, encode/decode, and a toy."""

import copy

import pytest
import torch

from fashiongen.config import TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS
from fashiongen.models.vae import VAE, VAEConfig, fit_gaussian_mixture

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def _model(num_classes=0, shape=(1, 28, 28), **fields):
    torch.manual_seed(0)
    return VAE(VAEConfig(num_classes=num_classes, **fields), shape)


def _batch(shape, n=8, num_classes=10):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, *shape, generator=g) * 2 - 1,
        torch.randint(num_classes, (n,), generator=g),
    )


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def _finite(losses):
    return all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_registered_and_configurable_from_toml_data():
    assert MODELS["vae"] is VAE
    cfg = config_from_dict({"model": {"name": "vae", "likelihood": "gaussian", "beta": 4}})
    assert cfg.model == VAEConfig(likelihood="gaussian", beta=4.0)
    with pytest.raises(ConfigError, match="likelihood"):
        config_from_dict({"model": {"name": "vae", "likelihood": "poisson"}})


@pytest.mark.parametrize(
    "fields",
    [
        {"latent_dim": 0},
        {"width": 0},
        {"beta": -1.0},
        {"gaussian_scale": 0.0},
        {"kl_warmup_steps": -1},
    ],
)
def test_config_rejects_bad_values(fields):
    with pytest.raises(ConfigError):
        VAEConfig(**fields)


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("shape", SHAPES)
def test_train_step_sample_and_inference_shapes(shape, num_classes):
    model = _model(num_classes, shape)
    x0, labels = _batch(shape)
    losses = model.train_step((x0, labels), model.make_optimizers(TrainConfig()))
    assert losses.keys() == {"loss", "recon", "kl"}
    assert _finite(losses)
    samples = model.sample(3, generator=_seeded(0))
    assert samples.shape == (3, *shape)
    assert samples.dtype == torch.float32
    assert samples.min() >= -1
    assert samples.max() <= 1
    given = labels if num_classes else None
    mu, logvar = model.encode(x0, given)
    assert mu.shape == logvar.shape == (8, model.config.latent_dim)
    assert model.decode(mu, given).shape == x0.shape
    x0_hat = model.reconstruct(x0, given)
    assert x0_hat.shape == x0.shape
    assert x0_hat.abs().max() <= 1


@pytest.mark.parametrize("use_learned_scale", [False, True])
def test_gaussian_likelihood(use_learned_scale):
    model = _model(0, likelihood="gaussian", use_learned_scale=use_learned_scale)
    learned = any(name == "log_scale" for name, _ in model.named_parameters())
    assert learned == use_learned_scale
    before = model.log_scale.item()
    losses = model.train_step(_batch((1, 28, 28)), model.make_optimizers(TrainConfig(lr=1e-2)))
    assert _finite(losses)
    assert (model.log_scale.item() != before) == use_learned_scale
    assert model.sample(2).abs().max() <= 1


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
    x0, _ = _batch((1, 28, 28), n=2)
    with pytest.raises(ConfigError, match="conditional"):
        model.encode(x0)
    with pytest.raises(ConfigError):
        model.decode(torch.zeros(1, model.config.latent_dim), torch.tensor([-1]))
    unconditional = _model(0)
    with pytest.raises(ConfigError):
        unconditional.sample(1, labels=torch.tensor([1]))
    # Given images' labels are data, not a request: an unconditional model ignores them.
    assert unconditional.reconstruct(x0, torch.tensor([3, 4])).shape == x0.shape


@pytest.mark.parametrize("training", [True, False])
def test_sample_restores_the_mode(training):
    model = _model(10).train(training)
    model.sample(2)
    model.reconstruct(*_batch((1, 28, 28), n=2))
    assert all(m.training == training for m in model.modules())


def test_kl_warmup_ramps_beta_and_is_saved():
    model = _model(0, beta=2.0, kl_warmup_steps=4)
    optimizers = model.make_optimizers(TrainConfig())
    weights = []
    for _ in range(5):
        weights.append(model.kl_weight())
        losses = model.train_step(_batch((1, 28, 28)), optimizers)
        assert losses["loss"] == pytest.approx(
            losses["recon"] + weights[-1] * losses["kl"], rel=1e-5
        )
    assert weights == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert model.state_dict()["num_steps_taken"].item() == 5
    assert _model(0, beta=2.0).kl_weight() == 2.0


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


def test_learns_a_single_pattern():
    """With every image equal to one binary pattern: the loss falls, reconstructions become
    the pattern, and prior samples move towards it."""
    shape = (1, 8, 8)
    pattern = torch.where(torch.arange(64).view(shape) % 3 == 0, 1.0, -1.0)
    model = _model(0, shape, latent_dim=4, width=8)
    optimizers = model.make_optimizers(TrainConfig(lr=3e-3, betas=(0.9, 0.999)))
    x0, labels = pattern.expand(32, *shape).contiguous(), torch.zeros(32, dtype=torch.long)

    def sample_error():
        return (model.sample(64, generator=_seeded(0)) - pattern).abs().mean().item()

    error_before = sample_error()
    first = model.train_step((x0, labels), optimizers)["loss"]
    for _ in range(400):
        last = model.train_step((x0, labels), optimizers)["loss"]
    assert last < first / 10, (first, last)
    assert (model.reconstruct(x0[:2]) - pattern).abs().max() < 0.1
    assert sample_error() < 0.6 * error_before, error_before


# ---------------------------------------------------------------- the fitted prior


def test_mixture_fit_recovers_two_clusters():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3000, 2, generator=g) * 0.5 + torch.tensor([4.0, 0.0])
    b = torch.randn(1000, 2, generator=g) * torch.tensor([0.2, 1.0]) + torch.tensor([-4.0, 1.0])
    log_w, means, tril = fit_gaussian_mixture(torch.cat([a, b]), 2)
    order = means[:, 0].argsort(descending=True)
    assert log_w.exp()[order].tolist() == pytest.approx([0.75, 0.25], abs=0.01)
    assert torch.allclose(means[order], torch.tensor([[4.0, 0.0], [-4.0, 1.0]]), atol=0.1)
    stds = torch.diagonal(tril @ tril.transpose(1, 2), dim1=1, dim2=2).sqrt()[order]
    assert torch.allclose(stds, torch.tensor([[0.5, 0.5], [0.2, 1.0]]), atol=0.05)


def test_mixture_fit_with_fewer_points_than_components():
    log_w, means, _ = fit_gaussian_mixture(torch.randn(3, 4), 10)
    assert len(log_w) == len(means) == 3


def _fitted(num_classes=0, **fields):
    """A fitted-prior VAE whose encoder is the identity on a 2-d 'image', so the codes of
    the training images are the points themselves."""
    model = _model(num_classes, prior="fitted", latent_dim=2, prior_components=2, **fields)
    model.encode = lambda x0, labels=None: (x0.flatten(1)[:, :2], None)
    return model


def test_prior_codes_follow_the_fitted_mixture():
    model = _fitted()
    g = torch.Generator().manual_seed(0)
    points = torch.cat(
        [torch.randn(600, 2, generator=g) * 0.1 + 3, torch.randn(200, 2, generator=g) * 0.1 - 3]
    )
    images = ((points.clamp(-6, 6) / 6 + 1) * 127.5).round().to(torch.uint8).view(-1, 1, 1, 2)
    model.fit_prior(images, torch.zeros(len(images), dtype=torch.long))
    assert bool(model.prior_is_fitted)
    codes = model.prior_codes(torch.randn(20000, 2, generator=g), None) * 6  # back in units
    assert (codes[:, 0] > 0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    upper = codes[codes[:, 0] > 0]
    assert upper.mean(0).tolist() == pytest.approx([3, 3], abs=0.05)
    assert upper.std(0).tolist() == pytest.approx([0.1, 0.1], abs=0.03), (
        "the re-standardised coordinate keeps the component's own spread"
    )


def test_conditional_prior_fits_one_mixture_per_class():
    model = _fitted(num_classes=2)
    images = torch.tensor([[10, 10]] * 50 + [[240, 240]] * 50, dtype=torch.uint8)
    labels = torch.tensor([0] * 50 + [1] * 50)
    model.fit_prior(images.view(-1, 1, 1, 2), labels)
    codes = model.prior_codes(torch.randn(100, 2), torch.tensor([0, 1] * 50))
    assert (codes[0::2] < -0.8).all() and (codes[1::2] > 0.8).all()


def test_fitted_prior_is_fit_at_the_end_of_training_and_saved(make_config):
    from fashiongen.checkpoint import load_model
    from fashiongen.training import train

    cfg = make_config(
        model={"name": "vae", "prior": "fitted", "prior_components": 3, "num_classes": 10},
        train={"epochs": 1},
    )
    run = train(cfg, progress=False).run_dir
    model, _ = load_model(run)
    assert bool(model.prior_is_fitted)
    weights = model.prior_log_weights.softmax(1)
    assert weights.shape == (10, 3) and torch.allclose(weights.sum(1), torch.ones(10))
    standard = _model(10)
    standard.load_state_dict(model.state_dict(), strict=False)
    labels = torch.arange(8) % 10
    fitted_x = model.sample(8, labels=labels, generator=_seeded(0))
    standard_x = standard.sample(8, labels=labels, generator=_seeded(0))
    assert not torch.allclose(fitted_x, standard_x), "samples decode the mixture's codes"


def test_unfitted_prior_samples_from_the_standard_normal():
    fitted, standard = _model(prior="fitted"), _model()
    standard.load_state_dict(fitted.state_dict(), strict=False)
    assert torch.equal(
        fitted.sample(4, generator=_seeded(0)), standard.sample(4, generator=_seeded(0))
    )


def test_a_class_without_training_images_keeps_the_standard_prior():
    model = _fitted(num_classes=2)
    model.fit_prior(
        torch.full((20, 1, 1, 2), 200, dtype=torch.uint8), torch.zeros(20, dtype=torch.long)
    )
    z = torch.randn(50, 2)
    assert torch.allclose(model.prior_codes(z, torch.ones(50, dtype=torch.long)), z, atol=1e-5)
