"""What the GAN families share: the two losses, TTUR learning rates, and the DCGAN's deeper G."""

import pytest
import torch

from fashiongen.config import TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models.adversarial import discriminator_loss, generator_loss
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
        expected.item(), rel=1e-6)
    smoothed = discriminator_loss(REAL, FAKE, "non_saturating", 0.1)
    assert smoothed.item() > expected.item(), "targets of 0.9 cost confident real logits"
    assert generator_loss(FAKE, "non_saturating").item() == pytest.approx(
        softplus(-FAKE).mean().item(), rel=1e-6)


@pytest.mark.parametrize(("family", "config"), [(GAN, GANConfig), (DCGAN, DCGANConfig)])
def test_ttur_scales_only_the_discriminator_learning_rate(family, config):
    model = family(config(d_lr_scale=4.0, g_width=8, d_width=8), (1, 28, 28))
    optimizers = model.make_optimizers(TrainConfig(lr=1e-4))
    assert optimizers["generator"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(4e-4)


@pytest.mark.parametrize("fields", [{"d_lr_scale": 0.0}, {"loss": "wasserstein"},
                                    {"g_extra_convs": -1}, {"g_extra_convs": 9}])
def test_config_rejects_bad_values(fields):
    with pytest.raises(ConfigError, match=f"model.{next(iter(fields))}"):
        config_from_dict({"model": {"name": "dcgan", **fields}})


@pytest.mark.parametrize("num_classes", [0, 10])
def test_hinge_dcgan_with_a_deeper_generator_trains_and_samples(num_classes):
    torch.manual_seed(0)
    shallow = DCGAN(DCGANConfig(g_width=8, d_width=8, num_classes=num_classes), (1, 28, 28))
    model = DCGAN(DCGANConfig(g_width=8, d_width=8, num_classes=num_classes, loss="hinge",
                              g_extra_convs=2), (1, 28, 28))
    convs = [m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2, "two stride-1 convs after the one inner up-sampling"
    assert sum(p.numel() for p in model.parameters()) > sum(
        p.numel() for p in shallow.parameters())
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
