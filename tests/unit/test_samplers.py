"""Noise schedules and samplers, tested against closed forms and oracle denoisers."""

from __future__ import annotations

import math

import pytest
import torch

from fashiongen.errors import ConfigError
from fashiongen.samplers import SAMPLERS, NoiseSchedule, get_sampler, timesteps
from fashiongen.samplers.schedules import COSINE_OFFSET, MAX_BETA

SHAPE = (4, 1, 6, 6)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Overrides conftest's 2 threads: on tiny tensors a second OpenMP thread only waits for
    a busy core, which made these tests 100x slower on a shared machine."""
    torch.set_num_threads(1)


@pytest.fixture(params=["linear", "cosine"])
def schedule(request: pytest.FixtureRequest) -> NoiseSchedule:
    return NoiseSchedule(request.param)


def fixed_image() -> torch.Tensor:
    return torch.linspace(-0.9, 0.9, math.prod(SHAPE[1:])).view(1, *SHAPE[1:])


def gaussian_oracle(schedule: NoiseSchedule, mu: float, sd: float):
    """E[x0 | x_t] for data x0 ~ N(mu, sd^2) per pixel: the exact x0 predictor."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        gain = abar.sqrt() * sd**2 / (abar * sd**2 + 1 - abar)
        return mu + gain * (x_t - abar.sqrt() * mu)

    return denoise


# ---------------------------------------------------------------- schedules


def test_linear_betas_endpoints() -> None:
    betas = NoiseSchedule("linear").betas
    assert betas.dtype == torch.float64
    assert len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)


def test_cosine_alphas_cumprod_matches_closed_form() -> None:
    schedule = NoiseSchedule("cosine")
    T = schedule.num_timesteps

    def f(u: float) -> float:
        return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    for t in (0, 1, 10, 250, 500, 900, 990):  # below the clipped tail
        assert schedule.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert schedule.betas.max().item() == pytest.approx(MAX_BETA)


def test_alphas_cumprod_decrease_monotonically(schedule: NoiseSchedule) -> None:
    abar = schedule.alphas_cumprod
    assert abar.dtype == torch.float64
    assert (abar[1:] < abar[:-1]).all()
    assert 0.99 < abar[0] < 1
    assert abar[-1] < 1e-3


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_moments(schedule: NoiseSchedule, t: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((20_000, 1, 1, 1), 0.7)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = schedule.q_sample(x0, torch.full((len(x0),), t), eps)
    abar = schedule.alpha_bar(t)
    assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.03)
    assert x_t.var().item() == pytest.approx(1 - abar, abs=0.03)


@pytest.mark.parametrize("t", [0, 1, 300, 700, 998])
def test_parametrisation_round_trips(schedule: NoiseSchedule, t: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(SHAPE, generator=gen) * 2 - 1
    eps = torch.randn(SHAPE, generator=gen)
    tt = torch.full((SHAPE[0],), t)
    x_t = schedule.q_sample(x0, tt, eps)
    v = schedule.velocity(x0, eps, tt)
    torch.testing.assert_close(schedule.x0_from_v(x_t, tt, v), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(schedule.eps_from_v(x_t, tt, v), eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(schedule.eps_from_x0(x_t, tt, x0), eps, atol=2e-3, rtol=0)
    # eps -> x0 divides by sqrt(abar_t), ill-conditioned at the noisiest steps
    atol = 1e-4 / math.sqrt(schedule.alpha_bar(t))
    torch.testing.assert_close(schedule.x0_from_eps(x_t, tt, eps), x0, atol=atol, rtol=0)
    for prediction, output in (("eps", eps), ("v", v), ("x0", x0)):
        assert torch.equal(schedule.target(x0, eps, tt, prediction), output)
        if prediction != "eps":
            torch.testing.assert_close(
                schedule.to_x0(x_t, tt, output, prediction), x0, atol=1e-5, rtol=0
            )


def test_schedule_buffers_follow_dtype_and_are_not_saved() -> None:
    schedule = NoiseSchedule("cosine").double()
    assert schedule.sqrt_alphas_cumprod.dtype == torch.float64
    assert schedule.state_dict() == {}


def test_unknown_schedule_raises() -> None:
    with pytest.raises(ConfigError, match="linear, cosine"):
        NoiseSchedule("quadratic")  # type: ignore[arg-type]


# ---------------------------------------------------------------- timesteps


@pytest.mark.parametrize(
    ("num_steps", "t_start"), [(1, None), (10, None), (50, 499), (1000, None), (7, 3), (3, 0)]
)
def test_timesteps_trailing(num_steps: int, t_start: int | None) -> None:
    schedule = NoiseSchedule("cosine")
    ts = timesteps(schedule, num_steps, t_start)
    start = 999 if t_start is None else t_start
    assert ts[0] == start
    assert len(ts) == min(num_steps, start + 1)
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert ts[-1] >= 0
    if len(ts) == start + 1:
        assert ts == list(range(start, -1, -1))


def test_timesteps_reject_bad_arguments() -> None:
    schedule = NoiseSchedule("cosine")
    with pytest.raises(ValueError, match="t_start"):
        timesteps(schedule, 10, 1000)
    with pytest.raises(ValueError, match="num_steps"):
        timesteps(schedule, 0)


# ---------------------------------------------------------------- samplers


def test_unknown_sampler_lists_choices() -> None:
    with pytest.raises(ConfigError, match="ancestral, ddim, dpmpp_2m"):
        get_sampler("euler")
    assert get_sampler("ddim") is SAMPLERS["ddim"]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("num_steps", [1, 2, 5, 50, 1000])
def test_exact_denoiser_recovers_the_single_data_point(
    name: str, num_steps: int, schedule: NoiseSchedule
) -> None:
    x_star = fixed_image()
    gen = torch.Generator().manual_seed(0)
    x_start = torch.randn(SHAPE, generator=gen)
    out = SAMPLERS[name](
        lambda x_t, t: x_star.expand_as(x_t),
        x_start,
        schedule,
        num_steps=num_steps,
        eta=1.0,
        generator=gen,
    )
    torch.testing.assert_close(out, x_star.expand(SHAPE), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "num_steps", "tol"),
    [("ancestral", 1000, 0.02), ("ddim", 100, 0.02), ("dpmpp_2m", 20, 0.02)],
)
def test_exact_denoiser_samples_a_gaussian(
    name: str, num_steps: int, tol: float, schedule: NoiseSchedule
) -> None:
    """With the exact posterior mean of N(0.3, 0.5^2) data, the samples have its moments."""
    gen = torch.Generator().manual_seed(0)
    x_start = torch.randn(64, 1, 16, 16, generator=gen)
    out = SAMPLERS[name](
        gaussian_oracle(schedule, 0.3, 0.5), x_start, schedule, num_steps=num_steps, generator=gen
    )
    assert out.mean().item() == pytest.approx(0.3, abs=0.015)
    assert out.std().item() == pytest.approx(0.5, abs=tol)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize(("num_steps", "t_start"), [(10, None), (10, 300), (4, 2), (5, 0)])
def test_samplers_evaluate_the_timestep_list(
    name: str, num_steps: int, t_start: int | None
) -> None:
    schedule = NoiseSchedule("cosine")
    seen: list[torch.Tensor] = []
    progress: list[tuple[int, int]] = []
    oracle = gaussian_oracle(schedule, 0.0, 0.5)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long
        assert t.shape == (SHAPE[0],)
        seen.append(t)
        return oracle(x_t, t)

    SAMPLERS[name](
        denoise,
        torch.randn(SHAPE),
        schedule,
        num_steps=num_steps,
        t_start=t_start,
        callback=lambda i, n: progress.append((i, n)),
    )
    expected = timesteps(schedule, num_steps, t_start)
    assert [int(t[0]) for t in seen] == expected
    assert all((t == t[0]).all() for t in seen)
    assert progress == [(i, len(expected)) for i in range(len(expected))]


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m"])
def test_deterministic_samplers_ignore_the_generator(name: str) -> None:
    schedule = NoiseSchedule("cosine")
    x_start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    outs = [
        SAMPLERS[name](
            gaussian_oracle(schedule, 0.0, 0.5),
            x_start,
            schedule,
            num_steps=10,
            eta=0.0,
            generator=torch.Generator().manual_seed(seed),
        )
        for seed in (1, 2)
    ]
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize(("name", "eta"), [("ancestral", 0.0), ("ddim", 1.0)])
def test_stochastic_samplers_follow_the_generator(name: str, eta: float) -> None:
    schedule = NoiseSchedule("cosine")
    x_start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))

    def run(seed: int) -> torch.Tensor:
        return SAMPLERS[name](
            gaussian_oracle(schedule, 0.0, 0.5),
            x_start,
            schedule,
            num_steps=10,
            eta=eta,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
