"""The DDPM family and its U-Net, on tiny networks and random images."""

from __future__ import annotations

import math

import pytest
import torch

from fashiongen.config import SampleConfig, TrainConfig, config_from_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS
from fashiongen.models.ddpm import DDPM, DDPMConfig
from fashiongen.nets.unet import UNet

TINY = {"base_width": 8, "num_levels": 2}
FEW_STEPS = SampleConfig(sampler="ddim", num_steps=3)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Overrides conftest's 2 threads: on tiny tensors a second OpenMP thread only waits for
    a busy core, which made these tests 100x slower on a shared machine."""
    torch.set_num_threads(1)


def tiny_ddpm(image_shape: tuple[int, int, int] = (1, 28, 28), **changes: object) -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(**{**TINY, **changes}), image_shape)


def randomise(model: DDPM) -> DDPM:
    """Perturb every weight: zero-initialised layers would hide the labels' effect."""
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn_like(p), alpha=0.05)
    return model


def batch(image_shape: tuple[int, int, int], n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, *image_shape, generator=gen) * 2 - 1,
        torch.randint(10, (n,), generator=gen),
    )


def test_registered_and_configurable_from_a_dict() -> None:
    assert MODELS["ddpm"] is DDPM
    cfg = config_from_dict(
        {
            "model": {
                "name": "ddpm",
                "schedule": "linear",
                "prediction": "eps",
                "t_max": 300,
                "optimizer_betas": [0.9, 0.99],
            }
        }
    )
    assert isinstance(cfg.model, DDPMConfig)
    assert cfg.model.t_max == 300
    assert cfg.model.optimizer_betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match="model.schedule"):
        config_from_dict({"model": {"name": "ddpm", "schedule": "sigmoid"}})
    with pytest.raises(ConfigError, match="t_max"):
        DDPMConfig(t_max=1000)


@pytest.mark.parametrize(
    "changes",
    [{}, {"prediction": "eps", "schedule": "linear"}, {"num_classes": 10}, {"t_max": 200}],
)
def test_train_step_gives_finite_loss_and_updates(changes: dict[str, object]) -> None:
    model = tiny_ddpm(**changes)
    optimizers = model.make_optimizers(TrainConfig(lr=1e-3))
    assert set(optimizers) == {"net"}
    before = [p.detach().clone() for p in model.net.parameters()]
    losses = model.train_step(batch((1, 28, 28)), optimizers)
    assert set(losses) == {"loss"}
    assert torch.isfinite(torch.tensor(losses["loss"]))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.net.parameters(), strict=True))


def test_optimizer_takes_lr_from_train_config_and_its_own_betas() -> None:
    model = tiny_ddpm()
    group = model.make_optimizers(TrainConfig(lr=1.5e-3, weight_decay=0.01))["net"].param_groups[0]
    assert group["lr"] == 1.5e-3
    assert group["weight_decay"] == 0.01
    assert group["betas"] == DDPMConfig().optimizer_betas


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m"])
def test_sample_shape_dtype_range_and_reproducibility(sampler: str) -> None:
    model = tiny_ddpm()
    sampling = SampleConfig(sampler=sampler, num_steps=3, eta=0.5)
    first = model.sample(5, generator=torch.Generator().manual_seed(7), sampling=sampling)
    again = model.sample(5, generator=torch.Generator().manual_seed(7), sampling=sampling)
    other = model.sample(5, generator=torch.Generator().manual_seed(8), sampling=sampling)
    assert first.shape == (5, 1, 28, 28)
    assert first.dtype == torch.float32
    assert first.min() >= -1
    assert first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sample_reports_progress() -> None:
    progress: list[tuple[int, int]] = []
    tiny_ddpm().sample(2, sampling=FEW_STEPS, callback=lambda i, n: progress.append((i, n)))
    assert progress == [(0, 3), (1, 3), (2, 3)]


def test_unknown_sampler_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="ddim"):
        tiny_ddpm().sample(2, sampling=SampleConfig(sampler="heun"))


def test_conditional_sampling_with_guidance() -> None:
    model = randomise(tiny_ddpm(num_classes=10))
    labels = torch.arange(4)
    sampling = SampleConfig(num_steps=3, guidance_scale=3.0)
    guided = model.sample(
        4, labels=labels, sampling=sampling, generator=torch.Generator().manual_seed(0)
    )
    plain = model.sample(
        4, labels=labels, sampling=FEW_STEPS, generator=torch.Generator().manual_seed(0)
    )
    assert guided.shape == (4, 1, 28, 28)
    assert torch.isfinite(guided).all()
    assert not torch.equal(guided, plain)
    assert model.sample(3, sampling=FEW_STEPS).shape == (3, 1, 28, 28)  # labels drawn
    with pytest.raises(ConfigError, match="labels"):
        model.sample(2, labels=torch.tensor([0, 10]), sampling=FEW_STEPS)


def test_guidance_is_one_batched_call_and_the_cfg_combination() -> None:
    model = randomise(tiny_ddpm(num_classes=10))
    calls: list[int] = []
    model.net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    x_t, t = torch.randn(3, 1, 28, 28), torch.tensor([10, 500, 900])
    labels = torch.tensor([1, 2, 3])
    guided = model.denoise(x_t, t, labels, guidance_scale=2.0)
    assert calls == [6]
    null = torch.full_like(labels, model.net.null_label)
    cond, uncond = model.net(x_t, t, labels), model.net(x_t, t, null)
    expected = model.schedule.to_x0(x_t, t, uncond + 2.0 * (cond - uncond), "v").clamp(-1, 1)
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-4)
    assert not torch.equal(cond, uncond)


def test_unconditional_model_rejects_labels() -> None:
    with pytest.raises(ConfigError, match="unconditional"):
        tiny_ddpm().sample(2, labels=torch.tensor([0, 1]), sampling=FEW_STEPS)


@pytest.mark.parametrize(
    ("image_shape", "changes"),
    [
        ((1, 28, 28), {}),
        ((3, 32, 32), {}),
        ((3, 64, 64), {}),
        ((1, 28, 28), {"num_levels": 3, "use_attention": True}),  # pads 28 -> 32
        ((3, 32, 32), {"use_unshuffle": False, "num_classes": 10}),
        ((3, 64, 64), {"num_levels": 3, "use_attention": True, "num_res_blocks": 2}),
    ],
)
def test_image_shapes(image_shape: tuple[int, int, int], changes: dict[str, object]) -> None:
    model = tiny_ddpm(image_shape, **changes)
    losses = model.train_step(batch(image_shape, n=2), model.make_optimizers(TrainConfig()))
    assert torch.isfinite(torch.tensor(losses["loss"]))
    assert model.sample(2, sampling=SampleConfig(num_steps=2)).shape == (2, *image_shape)


@pytest.mark.parametrize("hw", [(28, 28), (30, 22), (7, 9)])
def test_unet_pads_and_crops_any_size(hw: tuple[int, int]) -> None:
    net = UNet(3, (8, 16, 32), use_attention=True)  # needs multiples of 8
    x_t = torch.randn(2, 3, *hw)
    assert net(x_t, torch.tensor([0, 999])).shape == x_t.shape


def test_refine_from_zero_returns_the_draft() -> None:
    model = tiny_ddpm()
    draft = torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.equal(model.refine(draft, 0, sampling=FEW_STEPS), draft)


def test_refine_noises_and_samples_from_t_start() -> None:
    model = tiny_ddpm(num_classes=10, t_max=400)
    draft = torch.rand(3, 1, 28, 28) * 2 - 1
    seen: list[int] = []
    model.net.register_forward_hook(lambda m, args, out: seen.append(int(args[1][0])))
    out = model.refine(
        draft,
        400,
        labels=torch.tensor([1, 2, 3]),
        sampling=FEW_STEPS,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == draft.shape
    assert out.min() >= -1
    assert out.max() <= 1
    assert seen == [400, 266, 133]
    same = model.refine(
        draft,
        400,
        labels=torch.tensor([1, 2, 3]),
        sampling=FEW_STEPS,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(out, same)
    with pytest.raises(ConfigError, match="t_start"):
        model.refine(draft, 401, sampling=FEW_STEPS)


def test_schedule_is_not_in_the_state_dict() -> None:
    keys = tiny_ddpm().state_dict().keys()
    assert keys
    assert all(k.startswith("net.") for k in keys)


def test_lognormal_timesteps_follow_the_noise_levels():
    model = tiny_ddpm(timestep_sampling="lognormal", lognormal_mean=-0.9, lognormal_std=1.2)
    torch.manual_seed(0)
    t = model.training_timesteps(20000, torch.device("cpu"))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= model.max_timestep
    abar = model.schedule.alphas_cumprod[t]
    log_sigma = 0.5 * torch.log((1 - abar) / abar)
    assert abs(float(log_sigma.median()) + 0.9) < 0.05  # the nearest t keeps the median
    assert abs(float(log_sigma.std()) - 1.2) < 0.1
    uniform = tiny_ddpm().training_timesteps(20000, torch.device("cpu")).float()
    assert abs(float(uniform.mean()) - 499.5) < 10


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_weights_are_min_snr_on_the_x0_error(prediction):
    model = tiny_ddpm(loss_weighting="min_snr", min_snr_gamma=5.0, prediction=prediction)
    t = torch.tensor([10, 300, 700, 990])
    abar = model.schedule.alphas_cumprod[t].float()
    snr = abar / (1 - abar)
    # the x0 error is the output's error times d(x0)/d(output): 1/sqrt(SNR) for eps,
    # 1/sqrt(1 + SNR) for v, 1 for x0
    to_x0 = {"eps": 1 / snr, "v": 1 / (1 + snr), "x0": torch.ones_like(snr)}[prediction]
    torch.testing.assert_close(model.min_snr_weights(t), snr.clamp(max=5.0) * to_x0)
    batch_ = (torch.rand(4, 1, 28, 28) * 2 - 1, None)
    optimizer = model.make_optimizers(TrainConfig())
    assert math.isfinite(model.train_step(batch_, optimizer)["loss"])
