"""Divergence: non-finite losses and weights are caught at the step they appear; the run rolls
back (lowering the learning rate each time in a row) or stops; non-finite weights are never
written; a stop request on a checkpoint step writes that checkpoint once."""

from __future__ import annotations

import csv
import math
import signal
from pathlib import Path

import pytest
import torch

import fashiongen.checkpoint as ckpt
from fashiongen.checkpoint import list_checkpoints, load_checkpoint
from fashiongen.errors import TrainingDivergedError, TrainingInterruptedError
from fashiongen.models.dcgan import DCGAN
from fashiongen.training import train
from fashiongen.training.loop import MAX_ROLLBACKS
from fashiongen.training.state import checkpoint_step as _checkpoint_step

SMALL_DCGAN = {"name": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 16}
MAX_CALLS = 200  # a loop that never ends fails the test instead of hanging it


def _optimizer_step(optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """The training step just taken, from Adam's own count (restored by a rollback too)."""
    opt = optimizers["generator"]
    return int(opt.state[opt.param_groups[0]["params"][0]]["step"])


def _patch_step(monkeypatch, fault):
    """Run `fault(model, optimizers, losses, step)` after every real DCGAN step."""
    original = DCGAN.train_step
    calls = {"n": 0}

    def patched(self, batch, optimizers):
        calls["n"] += 1
        assert calls["n"] <= MAX_CALLS, "training never ends"
        losses = original(self, batch, optimizers)
        return fault(self, optimizers, losses, _optimizer_step(optimizers)) or losses

    monkeypatch.setattr(DCGAN, "train_step", patched)
    return calls


def _assert_everything_saved_is_finite(run_dir: str) -> None:
    run = Path(run_dir)
    folders = list_checkpoints(run) + ([run / "final"] if (run / "final").is_dir() else [])
    assert folders
    for folder in folders:
        saved, _ = load_checkpoint(folder)
        for tensors in (saved.weights, saved.ema):
            assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


def _poison(model: DCGAN) -> None:
    with torch.no_grad():
        next(model.generator.parameters()).view(-1)[0] = math.nan


def test_nan_weights_with_finite_losses_roll_back(make_config, monkeypatch, capsys):
    """The colleague's case: NaN weights, finite losses, on a checkpoint step (8)."""
    cfg = make_config(
        model=SMALL_DCGAN,
        train={
            "max_steps": 12,
            "checkpoint_every_n_steps": 4,
            "log_every_n_steps": 5,
            "ema_decay": 0.9,
        },
    )
    poisoned = []

    def fault(model, optimizers, losses, step):
        if step == 8 and not poisoned:
            poisoned.append(step)
            _poison(model)  # the losses this step reports stay finite

    calls = _patch_step(monkeypatch, fault)
    result = train(cfg, progress=False)
    assert result.steps == 12
    assert calls["n"] == 12 + (8 - 4), "caught at step 8, steps 5-8 replayed"
    assert (
        "weights non-finite: rolled back to step 4, learning rate halved" in capsys.readouterr().out
    )
    _assert_everything_saved_is_finite(cfg.out_dir)
    with open(Path(cfg.out_dir) / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [5, 10, 12], "the rolled-back row of step 5 is logged once, not twice"


def test_nan_weights_between_checks_are_caught_before_any_write(make_config, monkeypatch):
    """Poisoned on a step whose state nobody reads (6): caught by step 7's loss or step 8's
    check, never saved."""
    cfg = make_config(
        model=SMALL_DCGAN,
        train={"max_steps": 12, "checkpoint_every_n_steps": 4, "log_every_n_steps": 4},
    )
    poisoned = []

    def fault(model, optimizers, losses, step):
        if step == 6 and not poisoned:
            poisoned.append(step)
            _poison(model)
        if poisoned and not all(torch.isfinite(p).all() for p in model.parameters()):
            return {k: 0.5 for k in losses}  # keep reporting finite losses
        return None

    _patch_step(monkeypatch, fault)
    assert train(cfg, progress=False).steps == 12
    _assert_everything_saved_is_finite(cfg.out_dir)


def test_nan_weights_can_stop_the_run(make_config, monkeypatch):
    cfg = make_config(
        model=SMALL_DCGAN,
        train={"max_steps": 12, "checkpoint_every_n_steps": 4, "on_nonfinite": "stop"},
    )
    _patch_step(monkeypatch, lambda model, o, losses, step: _poison(model) if step == 8 else None)
    with pytest.raises(
        TrainingDivergedError,
        match=r"^weights became non-finite at step 8; "
        r"lower train\.lr",
    ):
        train(cfg, progress=False)
    assert [f.name for f in list_checkpoints(cfg.out_dir)] == ["step_0000004"]
    _assert_everything_saved_is_finite(cfg.out_dir)


def test_rollbacks_in_a_row_are_counted_and_lower_the_lr_each_time(make_config, monkeypatch):
    """Step 7 always fails. The old loop forgot its rollbacks at every log row, so with a row
    per step it replayed steps 5-7 forever; now the 4th failure in a row stops it."""
    cfg = make_config(
        model=SMALL_DCGAN,
        train={"max_steps": 12, "checkpoint_every_n_steps": 4, "log_every_n_steps": 1},
    )
    lrs = []

    def fault(model, optimizers, losses, step):
        if step == 7:
            lrs.append(optimizers["generator"].param_groups[0]["lr"])
            return {**losses, "g_loss": math.nan}
        return None

    _patch_step(monkeypatch, fault)
    with pytest.raises(
        TrainingDivergedError,
        match=f"g_loss became non-finite at step 7 again after {MAX_ROLLBACKS} rollbacks in a row",
    ):
        train(cfg, progress=False)
    lr = cfg.train.lr
    assert lrs == pytest.approx([lr, lr / 2, lr / 4, lr / 8])
    _assert_everything_saved_is_finite(cfg.out_dir)


def test_failures_apart_do_not_add_up(make_config, monkeypatch):
    """Four failures, each followed by a new checkpoint: the run completes."""
    cfg = make_config(model=SMALL_DCGAN, train={"max_steps": 20, "checkpoint_every_n_steps": 4})
    failed = set()

    def fault(model, optimizers, losses, step):
        if step in (6, 10, 14, 18) and step not in failed:
            failed.add(step)
            return {**losses, "d_loss": math.inf}
        return None

    _patch_step(monkeypatch, fault)
    assert train(cfg, progress=False).steps == 20
    assert failed == {6, 10, 14, 18}


def test_stop_request_on_a_checkpoint_step_saves_once(make_config, monkeypatch):
    cfg = make_config(model=SMALL_DCGAN, train={"max_steps": 30, "checkpoint_every_n_steps": 6})
    saved = []
    real_save = ckpt.save_checkpoint
    monkeypatch.setattr(
        ckpt,
        "save_checkpoint",
        lambda folder, **kw: saved.append(folder.name) or real_save(folder, **kw),
    )
    _patch_step(
        monkeypatch,
        lambda m, o, losses, step: signal.raise_signal(signal.SIGINT) if step == 6 else None,
    )
    with pytest.raises(TrainingInterruptedError, match="step_0000006"):
        train(cfg, progress=False)
    assert saved == ["step_0000006"]


def test_checkpoint_step_reads_only_the_header(make_config, monkeypatch):
    cfg = make_config(model=SMALL_DCGAN, train={"max_steps": 3})
    final = train(cfg, progress=False).final_checkpoint

    def no_tensors(*args, **kwargs):
        raise AssertionError("loaded every tensor to read one number")

    monkeypatch.setattr(ckpt, "load_file", no_tensors)
    assert _checkpoint_step(final) == 3
