"""The one training loop: outputs, exact resume, EMA, divergence handling, interruption."""

import csv
import math
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from fashiongen.checkpoint import STATE_CHECKSUM_KEY, list_checkpoints, load_checkpoint
from fashiongen.config import replace
from fashiongen.errors import ConfigError, TrainingDivergedError, TrainingInterruptedError
from fashiongen.models.dcgan import DCGAN
from fashiongen.training import train
from fashiongen.training.schedule import lr_factor_at

SMALL_DCGAN = {"name": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 16}


def test_run_folder_has_everything(make_config):
    cfg = make_config(model=SMALL_DCGAN, train={"epochs": 2, "ema_decay": 0.9})
    result = train(cfg, progress=False)
    run = result.run_dir
    assert result.steps == 2 * (640 // 32)
    for name in [
        "config.toml",
        "metrics.csv",
        "summary.json",
        "loss_curves.png",
        "progress.gif",
        "samples/epoch_0001.png",
        "samples/epoch_0002.png",
        "final/weights.safetensors",
        "final/state.pt",
    ]:
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "epoch", "d_loss", "g_loss", "images_per_s"} <= rows[0].keys()
    assert int(rows[-1]["step"]) == result.steps
    assert len(list_checkpoints(run)) <= cfg.train.keep_checkpoints
    weights = load_file(run / "final" / "weights.safetensors")
    assert any(k.startswith("ema.generator.") for k in weights), "EMA saved beside the model"


def test_refuses_to_overwrite_a_run(make_config):
    cfg = make_config(model=SMALL_DCGAN, train={"max_steps": 3})
    train(cfg, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)


@pytest.mark.parametrize("split_at", [10, 25])  # an epoch is 20 steps: mid-epoch and after one
def test_resume_continues_exactly(make_config, tmp_path, split_at):
    base = make_config(
        model={
            **SMALL_DCGAN,
            "d_reversion": True,
            "d_reversion_patience": 1,
            "d_reversion_threshold": 0.3,
            "d_snapshot_every_n_steps": 3,
        },
        train={
            "epochs": 3,
            "max_steps": 2 * split_at,
            "ema_decay": 0.9,
            "checkpoint_every_n_steps": split_at,
        },
    )
    one_go = train(replace(base, out_dir=str(tmp_path / "a")), progress=False)
    first = replace(base, out_dir=str(tmp_path / "b"), train={"max_steps": split_at})
    train(first, progress=False)
    resumed = train(replace(first, train={"max_steps": 2 * split_at}), resume=True, progress=False)
    assert resumed.steps == one_go.steps == 2 * split_at
    a = load_file(one_go.final_checkpoint / "weights.safetensors")
    b = load_file(resumed.final_checkpoint / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nonfinite_loss_rolls_back_and_lowers_lr(make_config, monkeypatch):
    cfg = make_config(model=SMALL_DCGAN, train={"max_steps": 12, "checkpoint_every_n_steps": 4})
    calls = {"n": 0}
    original = DCGAN.train_step

    def flaky(self, batch, optimizers):
        calls["n"] += 1
        losses = original(self, batch, optimizers)
        if calls["n"] == 7:
            losses["g_loss"] = math.nan
        return losses

    monkeypatch.setattr(DCGAN, "train_step", flaky)
    result = train(cfg, progress=False)
    assert result.steps == 12
    assert calls["n"] == 12 + 1 + (6 - 4), "one bad step, then steps 5-6 replayed"
    saved, state = load_checkpoint(result.final_checkpoint, with_state=True)
    lr = state["optimizers"]["generator"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(cfg.train.lr / 2)
    assert all(torch.isfinite(v).all() for v in saved.weights.values() if v.is_floating_point())


def test_lr_schedule_factors(make_config):
    cfg = make_config(train={"lr_schedule": "cosine", "warmup_steps": 4, "min_lr_ratio": 0.1})
    factors = [lr_factor_at(cfg.train, step, 14) for step in range(14)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert all(a > b for a, b in zip(factors[4:-1], factors[5:], strict=True))
    constant = replace(cfg, train={"lr_schedule": "constant"})
    assert [lr_factor_at(constant.train, s, 14) for s in (0, 1, 4, 13)] == [0.25, 0.5, 1, 1]


def test_cosine_schedule_resumes_exactly_and_rollback_lowers_its_base(
    make_config, tmp_path, monkeypatch
):
    base = make_config(
        model=SMALL_DCGAN,
        train={
            "max_steps": 16,
            "lr_schedule": "cosine",
            "warmup_steps": 3,
            "min_lr_ratio": 0.2,
            "checkpoint_every_n_steps": 6,
        },
    )
    one_go = train(replace(base, out_dir=str(tmp_path / "a")), progress=False)
    _, state = load_checkpoint(one_go.final_checkpoint, with_state=True)
    group = state["optimizers"]["generator"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.2 * base.train.lr), "the last step ran at the floor"
    assert state["base_lrs"]["generator"][0] == base.train.lr
    # Interrupted after the step-6 checkpoint (not max_steps=6, which would shorten the
    # schedule's horizon), then resumed.
    first = replace(base, out_dir=str(tmp_path / "b"))
    calls = {"n": 0}
    original = DCGAN.train_step

    def stop_after_six(self, batch, optimizers):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self, batch, optimizers)

    monkeypatch.setattr(DCGAN, "train_step", stop_after_six)
    with pytest.raises(KeyboardInterrupt):
        train(first, progress=False)
    monkeypatch.setattr(DCGAN, "train_step", original)
    resumed = train(first, resume=True, progress=False)
    a = load_file(one_go.final_checkpoint / "weights.safetensors")
    b = load_file(resumed.final_checkpoint / "weights.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def flaky(self, batch, optimizers):
        calls["n"] += 1
        losses = original(self, batch, optimizers)
        return {**losses, "g_loss": math.nan} if calls["n"] == 9 else losses

    calls["n"] = 0
    monkeypatch.setattr(DCGAN, "train_step", flaky)
    rolled = train(replace(base, out_dir=str(tmp_path / "c")), progress=False)
    _, state = load_checkpoint(rolled.final_checkpoint, with_state=True)
    group = state["optimizers"]["generator"]["param_groups"][0]
    assert state["base_lrs"]["generator"][0] == pytest.approx(base.train.lr / 2)
    assert group["lr"] == pytest.approx(0.2 * base.train.lr / 2)


def test_a_checkpoint_keeping_base_rates_in_its_param_groups_resumes_exactly(make_config, tmp_path):
    """Checkpoints written before `LearningRates` kept each group's base rate under a
    `base_lr` key of the group; they resume as they did."""
    base = make_config(
        model=SMALL_DCGAN,
        train={
            "max_steps": 8,
            "lr_schedule": "cosine",
            "warmup_steps": 2,
            "min_lr_ratio": 0.2,
            "checkpoint_every_n_steps": 4,
        },
    )
    one_go = train(replace(base, out_dir=str(tmp_path / "a")), progress=False)
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "a", old)
    shutil.rmtree(old / "final")
    state_file = old / "checkpoints" / "step_0000004" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    state.pop(STATE_CHECKSUM_KEY)
    for name, rates in state.pop("base_lrs").items():
        for group, rate in zip(state["optimizers"][name]["param_groups"], rates, strict=True):
            group["base_lr"] = rate
    torch.save(state, state_file)
    resumed = train(replace(base, out_dir=str(old)), resume=True, progress=False)
    a = load_file(one_go.final_checkpoint / "weights.safetensors")
    b = load_file(resumed.final_checkpoint / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, state = load_checkpoint(resumed.final_checkpoint, with_state=True)
    assert "base_lr" not in state["optimizers"]["generator"]["param_groups"][0]


def test_nonfinite_loss_can_stop(make_config, monkeypatch):
    cfg = make_config(model=SMALL_DCGAN, train={"max_steps": 5, "on_nonfinite": "stop"})
    monkeypatch.setattr(DCGAN, "train_step", lambda self, b, o: {"loss": math.inf})
    with pytest.raises(TrainingDivergedError, match="non-finite at step 1"):
        train(cfg, progress=False)


def test_stop_request_saves_a_checkpoint(make_config, monkeypatch):
    import signal

    cfg = make_config(model=SMALL_DCGAN, train={"epochs": 2, "max_steps": 30})
    original = DCGAN.train_step
    calls = {"n": 0}

    def interrupting(self, batch, optimizers):
        calls["n"] += 1
        if calls["n"] == 6:
            signal.raise_signal(signal.SIGINT)
        return original(self, batch, optimizers)

    monkeypatch.setattr(DCGAN, "train_step", interrupting)
    with pytest.raises(TrainingInterruptedError, match="--resume"):
        train(cfg, progress=False)
    assert list_checkpoints(cfg.out_dir)[-1].name == "step_0000006"
    monkeypatch.setattr(DCGAN, "train_step", original)
    assert train(cfg, resume=True, progress=False).steps == 30


def test_conditional_grid_has_a_row_per_class(make_config):
    from PIL import Image

    cfg = make_config(
        model={**SMALL_DCGAN, "num_classes": 10}, train={"max_steps": 2, "num_grid_samples": 20}
    )
    run = train(cfg, progress=False).run_dir
    grid = Image.open(next((run / "samples").glob("*.png")))
    # 10 rows of 2 images of 28 px, 2 px padding, scaled x2
    assert grid.size == (2 * (2 * 30 + 2), 2 * (10 * 30 + 2))


def test_time_budget_stops_training(make_config):
    cfg = make_config(model=SMALL_DCGAN, train={"epochs": 100, "max_minutes": 0.002})
    result = train(cfg, progress=False)
    assert 0 < result.steps < 100 * 20
    assert result.train_seconds >= 0.12
    assert (result.run_dir / "final" / "weights.safetensors").is_file()


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_cpu_clock_budget_ignores_time_without_cpu_work(make_config, monkeypatch, clock):
    """A step that waits (a busy machine, here a sleep) spends wall time but no CPU time."""
    import time

    real_step = DCGAN.train_step

    def waiting_step(self, batch, optimizers):
        time.sleep(0.2)
        return real_step(self, batch, optimizers)

    monkeypatch.setattr(DCGAN, "train_step", waiting_step)
    cfg = make_config(
        model=SMALL_DCGAN,
        train={"epochs": 100, "max_steps": 20, "max_minutes": 0.025, "clock": clock},
    )
    result = train(cfg, progress=False)
    if clock == "wall":  # 1.5 s of budget: at most 8 sleeping steps
        assert result.steps <= 8 and result.train_seconds >= 1.5
    else:  # the sleeps (4 s) cost no CPU; the steps compute for 15-50 ms each, 0.3-1 s in all
        assert result.steps == 20 and result.train_seconds < 1.5


def test_vae_run_writes_its_visuals(make_config):
    cfg = make_config(model={"name": "vae", "width": 8, "num_classes": 10}, train={"max_steps": 3})
    run = train(cfg, progress=False).run_dir
    for name in ("interpolation.png", "reconstructions.png", "latent_traversal.png"):
        assert (run / name).is_file(), name


def test_training_time_evaluation_is_logged(make_config, monkeypatch):
    import fashiongen.metrics

    calls = []

    def fake_evaluate(images, **kwargs):
        calls.append(len(images))
        return {
            "fid": 1.5,
            "kid_mean": 0.1,
            "precision": 0.5,
            "recall": 0.4,
            "coverage": 0.3,
            "class_entropy": 2.0,
        }

    monkeypatch.setattr(fashiongen.metrics, "evaluate", fake_evaluate)
    cfg = make_config(
        model=SMALL_DCGAN, train={"epochs": 2, "eval_every_n_epochs": 1, "eval_num_samples": 20}
    )
    run = train(cfg, progress=False).run_dir
    assert calls == [20, 20]
    with open(run / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[0]["eval_fid"]) == 1.5


def test_compiled_training_matches_eager_and_keeps_checkpoints(make_config, tmp_path):
    """`train.compile`: the networks compile in place, so checkpoints keep their keys and
    load without compiling; a compiled run (with its eval-mode grids and a resume) follows
    the eager one up to float rounding."""
    from torch._dynamo.utils import counters

    # no dropout: inductor draws its own random numbers, so masks would differ from eager
    model = {**SMALL_DCGAN, "use_spectral_norm": True, "dropout": 0.0, "num_classes": 10}
    base = make_config(
        model=model,
        train={"epochs": 2, "max_steps": 12, "ema_decay": 0.9, "checkpoint_every_n_steps": 6},
    )
    eager = train(replace(base, out_dir=str(tmp_path / "eager")), progress=False)
    counters.clear()
    compiled_cfg = replace(
        base, out_dir=str(tmp_path / "compiled"), train={"compile": True, "max_steps": 6}
    )
    train(compiled_cfg, progress=False)
    compiled = train(replace(compiled_cfg, train={"max_steps": 12}), resume=True, progress=False)
    assert counters["stats"]["unique_graphs"] >= 2, "G and D ran compiled"
    a = load_file(eager.final_checkpoint / "weights.safetensors")
    b = load_file(compiled.final_checkpoint / "weights.safetensors")
    assert a.keys() == b.keys()
    gaps = {k: (a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()}
    assert max(gaps.values()) < 1e-3, max(gaps.items(), key=lambda kv: kv[1])
    assert (compiled.run_dir / "samples" / "epoch_0001.png").is_file()
    saved, _ = load_checkpoint(compiled.final_checkpoint)
    assert saved.config.train.compile
    from fashiongen.checkpoint import load_model

    loaded, _ = load_model(compiled.run_dir)
    assert loaded.sample(4, labels=torch.arange(4)).shape == (4, 1, 28, 28)


def test_compile_without_a_cpp_compiler_trains_eagerly(make_config, monkeypatch, capsys):
    monkeypatch.setattr(sys.modules["fashiongen.device"].shutil, "which", lambda name: None)
    cfg = make_config(model=SMALL_DCGAN, train={"compile": True, "max_steps": 2})
    assert train(cfg, progress=False).steps == 2
    assert "no C++ compiler was found; training without compiling" in capsys.readouterr().err


def test_a_failing_compiler_falls_back_to_eager(make_config, monkeypatch, capsys):
    """The probe that `train.compile` compiles first fails (as it does, run alone, with a
    broken `inductor_config.cpp.cxx`): the run trains eagerly and says why."""

    def broken_compile(fn, **_):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = make_config(model=SMALL_DCGAN, train={"compile": True, "max_steps": 3})
    assert train(cfg, progress=False).steps == 3
    err = capsys.readouterr().err
    assert (
        "train.compile: compiling failed (InvalidCxxCompiler: No working C++ compiler "
        "found); training without compiling" in err
    )


def test_ema_warmup_follows_recent_weights_early_and_reaches_the_decay():
    from fashiongen.config import TrainConfig
    from fashiongen.training.ema import ema_decay_at

    warm = TrainConfig(ema_decay=0.999, use_ema_warmup=True)
    assert ema_decay_at(warm, 0) == pytest.approx(0.1)
    assert ema_decay_at(warm, 90) == pytest.approx(0.91)
    assert ema_decay_at(warm, 100_000) == pytest.approx(0.999), "capped at ema_decay"
    assert ema_decay_at(TrainConfig(ema_decay=0.999), 0) == 0.999, "off by default"


def test_ema_warmup_makes_the_early_average_track_the_weights(make_config, tmp_path):
    def ema_gap(use_warmup):
        cfg = make_config(
            model=SMALL_DCGAN,
            train={"max_steps": 20, "ema_decay": 0.999, "use_ema_warmup": use_warmup},
        )
        cfg = replace(cfg, out_dir=str(tmp_path / f"warmup_{use_warmup}"))
        run = train(cfg, progress=False).run_dir
        weights = load_file(run / "final" / "weights.safetensors")
        key = next(k for k in weights if k.startswith("ema.generator.") and "weight" in k)
        return (weights[key] - weights[key.removeprefix("ema.")]).abs().mean().item()

    assert ema_gap(True) < 0.5 * ema_gap(False), "the warmed-up EMA lags far less"
