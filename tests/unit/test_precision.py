"""bf16 autocast (issue 19) on any x86 CPU: every family trains with finite losses and
samples in range under bf16, checkpoints stay fp32, a bf16 run resumes exactly, `auto`
falls back to fp32 when the device has no bf16 units or the probe finds bf16 slower (the
FASHIONGEN_PRECISION_SIMULATE hook), a probe's verdict is cached per machine and reused by
later processes, and bad values are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fashiongen import precision
from fashiongen.checkpoint import load_checkpoint
from fashiongen.cli import main
from fashiongen.config import RunConfig, SampleConfig, config_from_dict, config_to_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS, build_model
from fashiongen.training import train
from fashiongen.zoo import available, release

TINY_MODELS = {
    "gan": {"name": "gan", "g_width": 16, "d_width": 16},
    "dcgan": {"name": "dcgan", "g_width": 8, "d_width": 8, "r1_gamma": 0.1, "reg_every_n_steps": 2},
    "vae": {"name": "vae", "width": 8},
    "ddpm": {"name": "ddpm", "base_width": 8},
    "distilled": {"name": "distilled", "base_width": 8, "steps": 2, "teacher_steps": 4},
    "hybrid": {
        "name": "hybrid",
        "gan": {"name": "dcgan", "g_width": 8, "d_width": 8},
        "refiner": {"name": "ddpm", "base_width": 8},
    },
}
# Big enough for `auto` to probe (precision.MIN_PARAMETERS), still fast
PROBED = {
    "ddpm": {"name": "ddpm", "base_width": 24},
    "dcgan": {"name": "dcgan", "g_width": 32, "d_width": 32},
}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A fresh per-machine cache for each test: simulated verdicts never reach the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(precision.REPROBE_ENV, raising=False)
    monkeypatch.setattr(precision, "_sampling_choices", {})  # a new process's memo


def test_every_family_has_a_tiny_model():
    assert set(TINY_MODELS) == set(MODELS)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_bf16_steps_are_finite_and_weights_stay_fp32(family, make_config):
    cfg = make_config({**TINY_MODELS[family], "num_classes": 10})
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28))
    optimizers = model.make_optimizers(cfg.train)
    batch = (torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(10, (8,)))
    for _ in range(3):
        with precision.autocast("bf16", CPU):
            losses = model.train_step(batch, optimizers)
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert {v.dtype for v in model.state_dict().values() if v.is_floating_point()} == {
        torch.float32
    }
    sampling = SampleConfig(num_steps=2, precision="bf16")
    images = model.sample(4, generator=torch.Generator().manual_seed(0), sampling=sampling)
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().max() <= 1


def test_bf16_sampling_is_close_to_fp32(make_config):
    """The same network and noise in both precisions: images differ by bf16 rounding only."""
    torch.manual_seed(0)
    model = build_model(make_config(TINY_MODELS["ddpm"]).model, (1, 28, 28))
    draw = {
        p: model.sample(
            8,
            generator=torch.Generator().manual_seed(1),
            sampling=SampleConfig(num_steps=3, precision=p),
        )
        for p in ("fp32", "bf16")
    }
    assert (draw["fp32"] - draw["bf16"]).abs().mean() < 0.05


def _train(make_config, model=TINY_MODELS["ddpm"], **train_section):
    cfg = make_config(model, train={"max_steps": 4, "checkpoint_every_n_steps": 2, **train_section})
    return cfg, train(cfg, progress=False)


def test_a_bf16_run_records_its_choice_and_saves_fp32(make_config):
    cfg, result = _train(make_config, precision="bf16")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["precision"]["choice"] == "bf16"
    assert summary["precision"]["reason"] == "bf16 as configured"
    saved, state = load_checkpoint(result.final_checkpoint, with_state=True)
    assert {
        v.dtype for v in [*saved.weights.values(), *saved.ema.values()] if v.is_floating_point()
    } == {torch.float32}
    moments = [
        v
        for opt in state["optimizers"].values()
        for s in opt["state"].values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim()
    ]
    assert moments and {v.dtype for v in moments} == {torch.float32}
    assert state["precision"]["choice"] == "bf16"


def test_a_bf16_run_resumes_exactly(make_config, tmp_path):
    _, straight = _train(make_config, precision="bf16")
    cfg = make_config(
        TINY_MODELS["ddpm"],
        out_dir=str(tmp_path / "halves"),
        train={"max_steps": 2, "checkpoint_every_n_steps": 2, "precision": "bf16"},
    )
    train(cfg, progress=False)
    cfg = make_config(
        TINY_MODELS["ddpm"],
        out_dir=str(tmp_path / "halves"),
        train={"max_steps": 4, "checkpoint_every_n_steps": 2, "precision": "bf16"},
    )
    resumed = train(cfg, resume=True, progress=False)
    a, b = (load_checkpoint(r.final_checkpoint)[0].weights for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("simulate", "choice", "probed"),
    [
        ("no-bf16-units", "fp32", False),
        ("bf16-slower", "fp32", True),
        ("bf16-faster", "bf16", True),
    ],
)
def test_auto_follows_the_units_and_the_probe(simulate, choice, probed, make_config, monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, simulate)
    _, result = _train(make_config, PROBED["ddpm"], precision="auto")
    record = json.loads((result.run_dir / "summary.json").read_text())["precision"]
    assert record["choice"] == choice and (record["probe"] is not None) == probed
    assert "avx512_bf16" in record["cpu_flags"]


def test_auto_without_units_on_this_cpu_picks_fp32(monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "no-bf16-units")
    made = precision.decide(
        "auto", CPU, lambda: pytest.fail("no probe without units"), num_parameters=10**7
    )
    assert made.choice == "fp32"


def test_auto_keeps_small_networks_in_fp32_without_a_probe(monkeypatch):
    """The tests' and the digest's tiny nets: a fixed choice keeps them byte-identical."""
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    made = precision.decide(
        "auto",
        CPU,
        lambda: pytest.fail("no probe for a tiny net"),
        num_parameters=precision.MIN_PARAMETERS - 1,
    )
    assert made.choice == "fp32" and made.probe is None


def test_a_resumed_auto_run_keeps_its_recorded_choice(make_config, tmp_path, monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    first = {"max_steps": 2, "checkpoint_every_n_steps": 2, "precision": "auto"}
    train(make_config(PROBED["ddpm"], train=first), progress=False)
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-slower")
    result = train(
        make_config(PROBED["ddpm"], train={**first, "max_steps": 4}), resume=True, progress=False
    )
    record = json.loads((result.run_dir / "summary.json").read_text())["precision"]
    assert record["choice"] == "bf16" and record["reason"].startswith("resumed: ")


def test_the_probe_leaves_the_run_untouched(make_config, monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")  # units, so the probe runs
    cfg = make_config(PROBED["dcgan"])
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(10, (8,)))
    rng = torch.get_rng_state()
    made = precision.choose_for_training("auto", model, cfg.train, batch, CPU)
    assert made.choice in ("fp32", "bf16") and made.probe is not None
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_auto_sampling_probes_once_per_architecture(make_config, monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    model = build_model(make_config(PROBED["ddpm"]).model, (1, 28, 28))
    sampling = SampleConfig(num_steps=2, precision="auto")
    first = precision.sampling_choice(model, sampling, "auto")
    assert first.choice == "bf16" and first.probe is not None
    assert precision.sampling_choice(model, sampling, "auto") is first
    again = build_model(make_config(PROBED["ddpm"]).model, (1, 28, 28))  # another load
    assert precision.sampling_choice(again, sampling, "auto") is first


def _ddpm(make_config, **model):
    return build_model(make_config({**PROBED["ddpm"], **model}).model, (1, 28, 28))


def test_a_later_process_reuses_the_cached_sampling_verdict(make_config, monkeypatch):
    """The first probe decides; a second process whose probe would say otherwise (here
    the simulation) reuses it, probing nothing."""
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    first = precision.sampling_choice(_ddpm(make_config), None, "auto")
    assert first.choice == "bf16" and first.probe is not None and first.cached is None
    child = (
        "import json, torch; from fashiongen import precision; "
        "from fashiongen.models import build_model; from fashiongen.config import "
        "config_from_dict; torch.set_num_threads(1); "
        f"cfg = config_from_dict({{'model': {PROBED['ddpm']!r}}}); "
        "model = build_model(cfg.model, (1, 28, 28)); "
        "precision._measure_sampling = lambda *a: 1 / 0; "  # a probe would fail loudly
        "print(json.dumps(precision.sampling_choice(model, None, 'auto').as_dict()))"
    )
    env = {**os.environ, precision.SIMULATE_ENV: "bf16-slower", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", child],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    second = json.loads(done.stdout.splitlines()[-1])
    assert second["choice"] == "bf16" and second["probe"] is None
    assert second["reason"] == f"cached: {first.reason}"
    assert second["cached"]["probe"]["simulated"] == "bf16-faster"


def test_a_later_run_reuses_the_cached_training_verdict(make_config, monkeypatch, tmp_path):
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    train(
        make_config(PROBED["ddpm"], out_dir=str(tmp_path / "a"), train={"max_steps": 1}),
        progress=False,
    )
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-slower")
    result = train(
        make_config(PROBED["ddpm"], out_dir=str(tmp_path / "b"), train={"max_steps": 1}),
        progress=False,
    )
    record = json.loads((result.run_dir / "summary.json").read_text())["precision"]
    assert record["choice"] == "bf16" and record["reason"].startswith("cached: probe:")
    assert record["probe"] is None  # no probe ran (nothing added to the run's budget)
    assert record["cached"]["probe"]["speedup"] == 2.0


def _decide(model, measure):
    return precision.decide(
        "auto",
        CPU,
        measure,
        num_parameters=precision.MIN_PARAMETERS,
        cache_key=precision.cache_key_for("sample", model, 32),
    )


def test_a_corrupt_cache_file_is_ignored_and_replaced(make_config, monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    model = _ddpm(make_config)
    first = _decide(model, lambda: {"speedup": 0.0})
    (path,) = precision.cache_folder().iterdir()
    probes = []
    for garbage in ("{not json", '{"key": 1}', '{"key": {}, "choice": {"choice": "fp16"}}'):
        path.write_text(garbage)
        again = _decide(model, lambda: probes.append(1) or {"speedup": 0.0})
        assert again.choice == first.choice and again.cached is None
        assert json.loads(path.read_text())["choice"]["choice"] == "bf16"
    assert len(probes) == 3  # each unreadable file: probed again


def test_reprobe_replaces_the_cached_verdict(make_config, monkeypatch):
    model = _ddpm(make_config)
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    assert _decide(model, dict).choice == "bf16"
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-slower")
    assert _decide(model, dict).choice == "bf16"  # cached
    monkeypatch.setenv(precision.REPROBE_ENV, "1")
    assert _decide(model, dict).choice == "fp32"
    monkeypatch.delenv(precision.REPROBE_ENV)
    assert _decide(model, dict).choice == "fp32"  # the new verdict is the cached one


def test_the_cache_key_follows_the_network_batch_and_phase(make_config):
    key = precision.cache_key_for
    model, same, wider = _ddpm(make_config), _ddpm(make_config), _ddpm(make_config, base_width=32)
    assert key("sample", model, 32) == key("sample", same, 32)
    assert key("sample", model, 32) != key("sample", wider, 32)
    assert key("sample", model, 32) != key("train", model, 32) != key("train", model, 64)
    paths = {precision._cache_path(k) for k in (key("sample", model, 32), key("sample", wider, 32))}
    assert len(paths) == 2
    assert set(key("train", model, 32)) >= {
        "cpu_model",
        "cpu_flags",
        "torch",
        "network",
        "batch_size",
        "num_threads",
    }


def test_the_zoo_check_samples_in_fp32(monkeypatch):
    """The manifest's numbers reproduce on any machine, bf16 units or none."""
    seen = []
    monkeypatch.setattr(
        release,
        "draw_and_score",
        lambda model, n, *, sampling, **kw: seen.append(sampling) or ({"fid": 1.0}, None),
    )
    release.check_fid(sorted(available())[0], 4)
    assert [s.precision for s in seen] == ["fp32"]


@pytest.mark.parametrize("section", ["train", "sample"])
def test_a_bad_precision_is_a_one_line_error(section):
    with pytest.raises(ConfigError, match=rf"^bad value for {section}\.precision: 'fp16'"):
        config_from_dict({section: {"precision": "fp16"}})


def test_a_bad_simulation_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "maybe")
    with pytest.raises(ConfigError, match=precision.SIMULATE_ENV):
        precision.decide("auto", CPU, dict, num_parameters=10**7)


def test_bf16_needs_a_cpu_or_cuda():
    with pytest.raises(ConfigError, match="sample.precision='bf16' needs a CPU or CUDA"):
        precision.check_device("bf16", torch.device("mps"), "sample.precision")


def test_the_default_precision_is_not_written():
    """Files written before the field existed and after hold the same bytes."""
    assert "precision" not in config_to_dict(RunConfig())["train"]
    cfg = config_from_dict({"train": {"precision": "bf16"}})
    assert config_to_dict(cfg)["train"]["precision"] == "bf16"


def test_the_cli_refuses_a_bad_precision(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", "dcgan", "--precision", "fp16"])
    assert exit_info.value.code == 2
    assert "--precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_sample_precision_flag(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                "--model",
                "dcgan",
                "--num-samples",
                "4",
                "--precision",
                "bf16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.is_file()


def _autocast_seen(model, monkeypatch) -> list[bool]:
    """Whether CPU autocast was on each time the family's decoding ran."""
    seen = []
    decode = model.generate_from_latents

    def recording(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return decode(*args, **kwargs)

    monkeypatch.setattr(model, "generate_from_latents", recording)
    return seen


def test_sample_precision_and_the_override_reach_the_networks(make_config, monkeypatch):
    model = build_model(make_config(TINY_MODELS["dcgan"]).model, (1, 28, 28))
    seen = _autocast_seen(model, monkeypatch)
    model.sample(2, sampling=SampleConfig(precision="bf16"))
    model.sample(2, sampling=SampleConfig(precision="fp32"))
    with precision.sampling_override("bf16"):  # --precision wins over the checkpoint's
        model.sample(2, sampling=SampleConfig(precision="fp32"))
    assert seen == [True, False, True]


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "--model", "ddpm"],
        ["eval", "--model", "ddpm"],
        ["synth", "--model", "ddpm", "--num-samples", "6", "--out", "x"],
        ["serve"],
    ],
)
def test_every_sampling_command_takes_precision(command):
    from fashiongen.cli import build_parser

    assert build_parser().parse_args([*command, "--precision", "bf16"]).precision == "bf16"
