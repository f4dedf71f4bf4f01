"""What the GAN families share: the two losses, TTUR learning rates, and the DCGAN's deeper G."""

import pytest
import torch

from fashiongen.config import TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models.adversarial import (
    adversarial_step,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    optimizer_step_count,
)
from fashiongen.models.dcgan import DCGAN, DCGANConfig
from fashiongen.models.gan import GAN, GANConfig

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 3.0])


def test_hinge_loss_values():
    # D: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + .5 + 2)/3 + (0 + 1 + 4)/3
    assert discriminator_loss(REAL, FAKE, "hinge", 0.0).item() == pytest.approx(7.5 / 3)
    assert generator_loss(FAKE, "hinge").item() == pytest.approx(-1 / 3)


def test_non_saturating_loss_values_and_smoothing():
    softplus = torch.nn.functional.softplus
    expected = softplus(-REAL).mean() + softplus(FAKE).mean()
    assert discriminator_loss(REAL, FAKE, "non_saturating", 0.0).item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    smoothed = discriminator_loss(REAL, FAKE, "non_saturating", 0.1)
    assert smoothed.item() > expected.item(), "targets of 0.9 cost confident real logits"
    assert generator_loss(FAKE, "non_saturating").item() == pytest.approx(
        softplus(-FAKE).mean().item(), rel=1e-6
    )


@pytest.mark.parametrize(("family", "config"), [(GAN, GANConfig), (DCGAN, DCGANConfig)])
def test_ttur_scales_only_the_discriminator_learning_rate(family, config):
    model = family(config(d_lr_scale=4.0, g_width=8, d_width=8), (1, 28, 28))
    optimizers = model.make_optimizers(TrainConfig(lr=1e-4))
    assert optimizers["generator"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(4e-4)


@pytest.mark.parametrize(
    "fields",
    [{"d_lr_scale": 0.0}, {"loss": "wasserstein"}, {"g_extra_convs": -1}, {"g_extra_convs": 9}],
)
def test_config_rejects_bad_values(fields):
    with pytest.raises(ConfigError, match=f"model.{next(iter(fields))}"):
        config_from_dict({"model": {"name": "dcgan", **fields}})


@pytest.mark.parametrize("num_classes", [0, 10])
def test_hinge_dcgan_with_a_deeper_generator_trains_and_samples(num_classes):
    torch.manual_seed(0)
    shallow = DCGAN(DCGANConfig(g_width=8, d_width=8, num_classes=num_classes), (1, 28, 28))
    model = DCGAN(
        DCGANConfig(g_width=8, d_width=8, num_classes=num_classes, loss="hinge", g_extra_convs=2),
        (1, 28, 28),
    )
    convs = [m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2, "two stride-1 convs after the one inner up-sampling"
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in shallow.parameters())
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(16, 1, 28, 28, generator=g) * 2 - 1, torch.randint(10, (16,), generator=g))
    optimizers = model.make_optimizers(TrainConfig())
    before = model.generator.upsample[3].weight.detach().clone()
    losses = model.train_step(batch, optimizers)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["d_loss"] >= 0, "hinge D loss is a sum of relus"
    assert not torch.equal(before, model.generator.upsample[3].weight), "the new conv learns"
    x0 = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert x0.shape == (4, 1, 28, 28)


# ---------------------------------------------------------------- R3GAN objective


def test_relativistic_pairing_loss_values():
    softplus = torch.nn.functional.softplus
    # D: softplus(-(D(real) - D(fake))) per pair; G the same with the roles swapped.
    assert discriminator_loss(REAL, FAKE, "relativistic", 0.0).item() == pytest.approx(
        softplus(FAKE - REAL).mean().item(), rel=1e-6
    )
    assert generator_loss(FAKE, "relativistic", REAL).item() == pytest.approx(
        softplus(REAL - FAKE).mean().item(), rel=1e-6
    )
    # Shifting every logit by the same amount changes nothing: only differences count.
    assert discriminator_loss(REAL + 5, FAKE + 5, "relativistic", 0.0).item() == pytest.approx(
        discriminator_loss(REAL, FAKE, "relativistic", 0.0).item(), rel=1e-6
    )


def test_gradient_penalty_is_the_squared_input_gradient_per_sample():
    x = torch.randn(5, 1, 3, 3, requires_grad=True)
    quadratic = 0.5 * x.square().flatten(1).sum(1)  # grad_x = x
    penalty = gradient_penalty(quadratic, x)
    torch.testing.assert_close(penalty, x.detach().square().flatten(1).sum(1))
    # Differentiable (double backward): d/dx sum ||x||^2 = 2x.
    (grad,) = torch.autograd.grad(penalty.sum(), x)
    torch.testing.assert_close(grad, 2 * x.detach())


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w for every x, so R1 = R2 = ||w||^2."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(9))

    def forward(self, x, labels=None):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize(("r1", "r2"), [(0.5, 0.0), (0.0, 0.25), (0.5, 0.25)])
def test_penalties_add_exactly_their_gradient_to_the_discriminator_update(r1, r2):
    """With SGD at lr 1, D's update is minus its gradient; r1/2 ||w||^2 + r2/2 ||w||^2 adds
    (r1 + r2) w to it, and G's update is unchanged."""

    def updates(r1_weight, r2_weight):
        torch.manual_seed(0)
        critic = LinearCritic()
        generator = torch.nn.Linear(4, 9)
        g_net = lambda z, labels=None: generator(z).view(-1, 1, 3, 3)  # noqa: E731
        optimizers = {
            "discriminator": torch.optim.SGD(critic.parameters(), lr=1.0),
            "generator": torch.optim.SGD(generator.parameters(), lr=1.0),
        }
        w_before = critic.w.detach().clone()
        g_before = generator.weight.detach().clone()
        x0, z = torch.randn(6, 1, 3, 3), torch.randn(6, 4)
        losses = adversarial_step(
            g_net,
            critic,
            x0,
            None,
            z,
            optimizers,
            loss="relativistic",
            r1_weight=r1_weight,
            r2_weight=r2_weight,
        )
        return (
            critic.w.detach() - w_before,
            generator.weight.detach() - g_before,
            w_before,
            losses,
        )

    plain_d, plain_g, w, plain_losses = updates(0.0, 0.0)
    reg_d, reg_g, _, losses = updates(r1, r2)
    torch.testing.assert_close(plain_d - reg_d, (r1 + r2) * w)
    assert "r1_penalty" not in plain_losses
    assert losses["r1_penalty"] == pytest.approx(w.square().sum().item(), rel=1e-5)
    assert losses["r2_penalty"] == pytest.approx(w.square().sum().item(), rel=1e-5)


def test_lazy_penalty_weights_and_gamma_schedule():
    cfg = DCGANConfig(r1_gamma=0.2, r2_gamma=0.1, reg_every_n_steps=4)
    assert cfg.penalty_weights(0) == pytest.approx((0.8, 0.4)), "every 4th step, times 4"
    assert cfg.penalty_weights(1) == (0.0, 0.0)
    assert cfg.penalty_weights(8) == pytest.approx((0.8, 0.4))
    decaying = DCGANConfig(
        r1_gamma=1.0, r2_gamma=1.0, r_gamma_final_ratio=0.1, r_gamma_decay_steps=100
    )
    assert decaying.penalty_weights(0)[0] == pytest.approx(1.0)
    assert decaying.penalty_weights(50)[0] == pytest.approx(0.55)
    assert decaying.penalty_weights(100)[0] == pytest.approx(0.1)
    assert decaying.penalty_weights(10_000)[0] == pytest.approx(0.1), "stays at the floor"
    assert DCGANConfig().penalty_weights(0) == (0.0, 0.0), "off by default"


@pytest.mark.parametrize(("family", "config"), [(GAN, GANConfig), (DCGAN, DCGANConfig)])
def test_regularised_step_count_survives_an_optimizer_state_round_trip(family, config):
    """The lazy schedule counts D's optimizer steps, which checkpoints save and resume."""
    torch.manual_seed(0)
    model = family(
        config(
            g_width=8,
            d_width=8,
            num_classes=10,
            loss="relativistic",
            r1_gamma=0.1,
            r2_gamma=0.1,
            reg_every_n_steps=3,
        ),
        (1, 28, 28),
    )
    optimizers = model.make_optimizers(TrainConfig(betas=(0.0, 0.99)))
    batch = (torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(10, (8,)))
    logged = [model.train_step(batch, optimizers)["r1_penalty"] for _ in range(4)]
    assert logged[0] > 0 and logged[1] == logged[2] == 0 and logged[3] > 0
    assert optimizer_step_count(optimizers["discriminator"]) == 4
    restored = model.make_optimizers(TrainConfig(betas=(0.0, 0.99)))
    restored["discriminator"].load_state_dict(optimizers["discriminator"].state_dict())
    assert optimizer_step_count(restored["discriminator"]) == 4


@pytest.mark.parametrize(
    "fields",
    [
        {"r1_gamma": -1.0},
        {"r2_gamma": -0.1},
        {"reg_every_n_steps": 0},
        {"r_gamma_final_ratio": 0.0},
        {"label_smoothing": 0.1, "loss": "relativistic"},
    ],
)
def test_objective_config_rejects_bad_values(fields):
    with pytest.raises(ConfigError, match=f"model.{next(iter(fields))}"):
        config_from_dict({"model": {"name": "gan", **fields}})


# ---------------------------------------------------------------- D weight reversion


def test_dominating_discriminator_is_reverted_to_its_snapshot():
    """A threshold every D exceeds: after `patience` dominating steps D is reset to its
    snapshot (here the initial D: snapshots are only taken between streaks), the step reports
    the event, and the cooldown holds off the next reversion."""
    torch.manual_seed(0)
    model = DCGAN(
        DCGANConfig(
            g_width=8,
            d_width=8,
            d_reversion=True,
            d_reversion_trigger="d_loss",
            d_reversion_threshold=1e9,
            d_reversion_patience=3,
            d_reversion_cooldown=100,
            d_snapshot_every_n_steps=1,
        ),
        (1, 28, 28),
    )
    assert model.reversion is not None, "the controller is a registered submodule"
    assert "reversion.counters" in model.state_dict()
    initial = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(16, 1, 28, 28, generator=g) * 2 - 1, None)
    optimizers = model.make_optimizers(TrainConfig())

    def step() -> float:
        return model.train_step(batch, optimizers)["event_d_reversion"]

    assert [step() for _ in range(3)] == [0.0, 0.0, 1.0]
    reverted = model.discriminator.state_dict()
    assert all(torch.equal(reverted[k], v) for k, v in initial.items())
    assert [step() for _ in range(3)] == [0.0, 0.0, 0.0], "cooldown"
    assert model.reversion.num_reversions == 1
    trained_on = model.discriminator.state_dict()
    assert not all(torch.equal(trained_on[k], v) for k, v in initial.items())


def test_families_without_reversion_report_no_event():
    model = GAN(GANConfig(g_width=16, d_width=16), (1, 28, 28))
    batch = (torch.rand(8, 1, 28, 28) * 2 - 1, None)
    losses = model.train_step(batch, model.make_optimizers(TrainConfig()))
    assert model.reversion is None and "event_d_reversion" not in losses
