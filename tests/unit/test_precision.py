"""bf16 autocast (issue 19) on any x86 CPU: every family trains with finite losses and
samples in range under bf16, checkpoints stay fp32, a bf16 run resumes exactly, `auto`
falls back to fp32 when the device has no bf16 units or the probe finds bf16 slower (the
FASHIONGEN_PRECISION_SIMULATE hook), and bad values are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from fashiongen import precision
from fashiongen.checkpoint import load_checkpoint
from fashiongen.cli import main
from fashiongen.config import RunConfig, SampleConfig, config_from_dict, config_to_dict
from fashiongen.errors import ConfigError
from fashiongen.models import MODELS, build_model
from fashiongen.training import train

TINY_MODELS = {
    "gan": {"name": "gan", "g_width": 16, "d_width": 16},
    "dcgan": {"name": "dcgan", "g_width": 8, "d_width": 8, "r1_gamma": 0.1,
              "reg_every_n_steps": 2},
    "vae": {"name": "vae", "width": 8},
    "ddpm": {"name": "ddpm", "base_width": 8},
    "hybrid": {"name": "hybrid", "gan": {"name": "dcgan", "g_width": 8, "d_width": 8},
               "refiner": {"name": "ddpm", "base_width": 8}},
}
# Big enough for `auto` to probe (precision.MIN_PARAMETERS), still fast
PROBED = {"ddpm": {"name": "ddpm", "base_width": 24},
          "dcgan": {"name": "dcgan", "g_width": 32, "d_width": 32}}
CPU = torch.device("cpu")


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
    assert {v.dtype for v in model.state_dict().values() if v.is_floating_point()} \
        == {torch.float32}
    sampling = SampleConfig(num_steps=2, precision="bf16")
    images = model.sample(4, generator=torch.Generator().manual_seed(0), sampling=sampling)
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().max() <= 1


def test_bf16_sampling_is_close_to_fp32(make_config):
    """The same network and noise in both precisions: images differ by bf16 rounding only."""
    torch.manual_seed(0)
    model = build_model(make_config(TINY_MODELS["ddpm"]).model, (1, 28, 28))
    draw = {p: model.sample(8, generator=torch.Generator().manual_seed(1),
                            sampling=SampleConfig(num_steps=3, precision=p))
            for p in ("fp32", "bf16")}
    assert (draw["fp32"] - draw["bf16"]).abs().mean() < 0.05


def _train(make_config, model=TINY_MODELS["ddpm"], **train_section):
    cfg = make_config(model,
                      train={"max_steps": 4, "checkpoint_every_n_steps": 2, **train_section})
    return cfg, train(cfg, progress=False)


def test_a_bf16_run_records_its_choice_and_saves_fp32(make_config):
    cfg, result = _train(make_config, precision="bf16")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["precision"]["choice"] == "bf16"
    assert summary["precision"]["reason"] == "bf16 as configured"
    saved, state = load_checkpoint(result.final_checkpoint, with_state=True)
    assert {v.dtype for v in [*saved.weights.values(), *saved.ema.values()]
            if v.is_floating_point()} == {torch.float32}
    moments = [v for opt in state["optimizers"].values() for s in opt["state"].values()
               for v in s.values() if isinstance(v, torch.Tensor) and v.dim()]
    assert moments and {v.dtype for v in moments} == {torch.float32}
    assert state["precision"]["choice"] == "bf16"


def test_a_bf16_run_resumes_exactly(make_config, tmp_path):
    _, straight = _train(make_config, precision="bf16")
    cfg = make_config(TINY_MODELS["ddpm"], out_dir=str(tmp_path / "halves"),
                      train={"max_steps": 2, "checkpoint_every_n_steps": 2,
                             "precision": "bf16"})
    train(cfg, progress=False)
    cfg = make_config(TINY_MODELS["ddpm"], out_dir=str(tmp_path / "halves"),
                      train={"max_steps": 4, "checkpoint_every_n_steps": 2,
                             "precision": "bf16"})
    resumed = train(cfg, resume=True, progress=False)
    a, b = (load_checkpoint(r.final_checkpoint)[0].weights for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("simulate", "choice", "probed"), [
    ("no-bf16-units", "fp32", False), ("bf16-slower", "fp32", True),
    ("bf16-faster", "bf16", True)])
def test_auto_follows_the_units_and_the_probe(simulate, choice, probed, make_config,
                                              monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, simulate)
    _, result = _train(make_config, PROBED["ddpm"], precision="auto")
    record = json.loads((result.run_dir / "summary.json").read_text())["precision"]
    assert record["choice"] == choice and (record["probe"] is not None) == probed
    assert "avx512_bf16" in record["cpu_flags"]


def test_auto_without_units_on_this_cpu_picks_fp32(monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "no-bf16-units")
    made = precision.decide("auto", CPU, lambda: pytest.fail("no probe without units"),
                            num_parameters=10**7)
    assert made.choice == "fp32"


def test_auto_keeps_small_networks_in_fp32_without_a_probe(monkeypatch):
    """The tests' and the digest's tiny nets: a fixed choice keeps them byte-identical."""
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    made = precision.decide("auto", CPU, lambda: pytest.fail("no probe for a tiny net"),
                            num_parameters=precision.MIN_PARAMETERS - 1)
    assert made.choice == "fp32" and made.probe is None


def test_a_resumed_auto_run_keeps_its_recorded_choice(make_config, tmp_path, monkeypatch):
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-faster")
    first = {"max_steps": 2, "checkpoint_every_n_steps": 2, "precision": "auto"}
    train(make_config(PROBED["ddpm"], train=first), progress=False)
    monkeypatch.setenv(precision.SIMULATE_ENV, "bf16-slower")
    result = train(make_config(PROBED["ddpm"], train={**first, "max_steps": 4}),
                   resume=True, progress=False)
    record = json.loads((result.run_dir / "summary.json").read_text())["precision"]
    assert record["choice"] == "bf16" and record["reason"].startswith("resumed: ")


def test_the_probe_leaves_the_run_untouched(make_config):
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
    monkeypatch.setattr(precision, "_sampling_choices", {})  # this test's simulated verdict
    model = build_model(make_config(PROBED["ddpm"]).model, (1, 28, 28))
    sampling = SampleConfig(num_steps=2, precision="auto")
    first = precision.sampling_choice(model, sampling, "auto")
    assert first.choice == "bf16" and first.probe is not None
    assert precision.sampling_choice(model, sampling, "auto") is first
    again = build_model(make_config(PROBED["ddpm"]).model, (1, 28, 28))  # another load
    assert precision.sampling_choice(again, sampling, "auto") is first


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
    assert main(["sample", "--model", "dcgan", "--num-samples", "4", "--precision", "bf16",
                 "--out", str(out)]) == 0
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


@pytest.mark.parametrize("command", [["sample", "--model", "ddpm"], ["eval", "--model", "ddpm"],
                                     ["synth", "--model", "ddpm", "--num-samples", "6",
                                      "--out", "x"], ["serve"]])
def test_every_sampling_command_takes_precision(command):
    from fashiongen.cli import build_parser

    assert build_parser().parse_args([*command, "--precision", "bf16"]).precision == "bf16"
