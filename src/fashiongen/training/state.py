"""A run's training state and how it comes back: what a checkpoint holds besides the
weights (optimizers, base learning rates, RNG states, step, budget seconds), the periodic and
final checkpoints, the rollback after a divergence, and resumption: picking the newest
readable checkpoint (corrupt ones are skipped with a warning, the fallback that crash safety
relies on), refusing a folder that mixes two runs, and the one rule for what `train
--resume` may change (`RESUME_SAFE_KEYS`), which the CLI and the loop both apply."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fashiongen import checkpoint as ckpt
from fashiongen import distributed, files
from fashiongen.config import (
    RunConfig,
    config_from_dict,
    config_to_dict,
    deep_merge,
    merge_overrides,
    read_toml,
)
from fashiongen.data import ImageDataset
from fashiongen.errors import CheckpointError, ConfigError, FashiongenError, TrainingDivergedError
from fashiongen.models import build_model
from fashiongen.models.base import Family
from fashiongen.training.schedule import LearningRates

# What `train --resume` may change in a run's config: how long and how it trains, where its
# data lives, how its grids sample. Anything else (family, network shape, dataset, seed) would
# make the checkpoint another run's, so a change to it is refused.
RESUME_SAFE_KEYS = ("train.", "data.data_dir", "sample.", "out_dir")


# ---------------------------------------------------------------- the resume rule


def resume_request(
    run_dir: Path, changes: dict[str, Any], overrides: list[str], *, check: bool
) -> RunConfig:
    """The config `train --resume` is asked for: the run's saved config with `changes` (a
    preset's table) and `overrides` (`--set` strings) on top. A family change, or a table
    that is no config, is judged after the run itself (a folder mixing two runs says so
    first); `check` judges every change now (`--dry-run`; `train` does it against the
    checkpoint, `resumed_config`)."""
    saved = run_config_table(run_dir)
    table = merge_overrides(deep_merge(saved, changes), overrides)
    family, asked = saved.get("model", {}).get("name"), table.get("model", {}).get("name")
    try:
        cfg = config_from_dict(table)
    except ConfigError:
        check_run_folder(run_dir)
        if asked != family:  # the new family's keys clash with the run's
            raise unsafe_resume_change("model.name", family, asked) from None
        raise
    if asked != family:
        check_run_folder(run_dir)
        raise unsafe_resume_change("model.name", family, asked)
    return resumed_config(config_from_dict(saved), cfg) if check else cfg


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resumed_config(saved: RunConfig, requested: RunConfig) -> RunConfig:
    """`requested` (a run's saved config with the user's changes) if resuming can honour
    every change; a change to anything but RESUME_SAFE_KEYS is a one-line ConfigError."""
    old, new = _flat(config_to_dict(saved)), _flat(config_to_dict(requested))
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key) and not key.startswith(RESUME_SAFE_KEYS):
            raise unsafe_resume_change(key, old.get(key), new.get(key))
    return requested


def unsafe_resume_change(key: str, old: Any, new: Any) -> ConfigError:
    return ConfigError(
        f"--resume cannot change {key} ({old!r} -> {new!r}): the checkpoint "
        "is of the run as it was; drop the change, or train into a new --out"
    )


def run_config_table(run_dir: str | Path) -> dict[str, Any]:
    """A run's config as a table: its config.toml, or its latest checkpoint's if that is
    unreadable (what `train --resume` starts from before the user's changes)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"nothing to resume: {run_dir} does not exist")
    if not ckpt.list_checkpoints(run_dir) and not (run_dir / "final").is_dir():
        raise CheckpointError(f"nothing to resume: no checkpoints in {run_dir}")
    with contextlib.suppress(ConfigError):
        return read_toml(run_dir / "config.toml")
    try:
        return json.loads(ckpt.read_metadata(run_dir)["config"])
    except (FashiongenError, KeyError, ValueError):
        raise CheckpointError(f"nothing to resume: {run_dir} holds no readable run") from None


# ---------------------------------------------------------------- which checkpoint resumes


def open_for_resume(run_dir: Path) -> tuple[Path, ckpt.Checkpoint, dict[str, Any]]:
    """Clear what a killed run left half-written, then pick the checkpoint to resume from,
    refusing one whose family differs from the run's config.toml."""
    if not run_dir.is_dir():
        raise CheckpointError(f"nothing to resume: {run_dir} does not exist")
    for directory in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        files.remove_stale_temporaries(directory)
    folder, saved, state = latest_good_checkpoint(run_dir)
    _check_one_run(run_dir, folder, saved)
    return folder, saved, state


def check_run_folder(run_dir: Path) -> None:
    """Raise what `train --resume` would find wrong with the run itself (a folder mixing two
    runs, tensors that do not fit their config) before a change asked of it is judged."""
    folder, saved, _ = latest_good_checkpoint(run_dir)
    _check_one_run(run_dir, folder, saved)
    model = build_model(saved.config.model, saved.image_shape)
    ckpt.check_weights_fit(model, {**saved.weights, **saved.ema}, saved)


def _check_one_run(run_dir: Path, folder: Path, saved: ckpt.Checkpoint) -> None:
    """Refuse a checkpoint whose family or model differs from the run's config.toml."""
    config_file = run_dir / "config.toml"
    try:
        run_config = read_toml(config_file) if config_file.is_file() else None
    except ConfigError:
        run_config = None  # unreadable: the checkpoint's own config decides
    run_model = (run_config or {}).get("model")
    if isinstance(run_model, dict) and "name" in run_model:
        family = saved.config.model.name
        if run_model["name"] != family:
            raise CheckpointError(
                f"{config_file} describes a {run_model['name']} model but checkpoint {folder} "
                f"holds a {family}: the folder mixes two runs; restore its config.toml or "
                "train into a new --out"
            )
        with contextlib.suppress(ConfigError):
            if config_from_dict(run_config).model != saved.config.model:
                raise CheckpointError(
                    f"{config_file} describes another {family} than checkpoint {folder} "
                    "holds: the folder mixes two runs; restore its config.toml or train "
                    "into a new --out"
                )


def latest_good_checkpoint(run_dir: Path) -> tuple[Path, ckpt.Checkpoint, dict[str, Any]]:
    """The newest checkpoint whose weights and state both load; corrupt ones are skipped
    with a one-line warning naming the file (the fallback crash safety relies on)."""
    folders = ckpt.list_checkpoints(run_dir)
    if (run_dir / "final").is_dir():
        folders.append(run_dir / "final")
    if not folders:
        raise CheckpointError(f"nothing to resume: no checkpoints in {run_dir}")
    errors: list[str] = []
    candidates = []
    for folder in folders:
        try:
            candidates.append((checkpoint_step(folder), folder))
        except CheckpointError as e:
            errors.append(_skipped(e))
    for _, folder in sorted(candidates, reverse=True):
        try:
            saved, state = ckpt.load_checkpoint(folder, with_state=True)
            return folder, saved, state
        except CheckpointError as e:
            errors.append(_skipped(e))
    raise CheckpointError(f"no readable checkpoint in {run_dir}: {errors[0]}")


def _skipped(error: CheckpointError) -> str:
    tqdm.write(f"warning: {error}; trying an older checkpoint", file=sys.stderr)
    return str(error)


def checkpoint_step(folder: Path) -> int:
    """The step of a checkpoint folder, from its name or else its header alone.

    Raises:
        CheckpointError: the header is unreadable.
    """
    if folder.name.startswith("step_"):
        with contextlib.suppress(ValueError):
            return int(folder.name.removeprefix("step_"))
    return ckpt.read_step(folder)


# ---------------------------------------------------------------- the state itself


@dataclass
class Progress:
    """The loop's counters: the step, and what the run's summary and budget count."""

    step: int = 0
    train_seconds: float = 0.0  # on the budget's clock (`train.clock`), over all sessions
    session_seconds: float = 0.0  # wall time of this session's steps
    images_seen: int = 0  # by this session
    rollbacks: int = 0  # in a row, since the last checkpoint
    last_grid_step: int = -1


@dataclass
class TrainingState:
    """What training changes and a checkpoint restores: the model's weights, its optimizers
    and their base learning rates, the EMA, and the RNG states (the data order's in
    `data_rng`, the noise's in torch's global generators)."""

    model: Family
    optimizers: dict[str, torch.optim.Optimizer]
    rates: LearningRates
    ema: dict[str, torch.Tensor]
    data_rng: torch.Generator
    ctx: distributed.DistContext
    seed: int
    # `train.precision`'s choice and why (fashiongen.precision.PrecisionChoice.as_dict): a
    # resumed run keeps it
    precision: dict[str, Any] | None = None

    def capture(
        self, step: int, epoch_rng_state: torch.Tensor, train_seconds: float
    ) -> dict[str, Any]:
        """What resumption needs besides the weights. Distributed, it also holds every
        rank's noise RNG state (a collective: every rank calls it); the rest is rank 0's."""
        state: dict[str, Any] = {
            "step": step,
            "train_seconds": train_seconds,
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "base_lrs": self.rates.state_dict(),
            "torch_rng_state": torch.get_rng_state(),
            "epoch_rng_state": epoch_rng_state,
        }
        if self.precision is not None:
            state["precision"] = self.precision
        if torch.cuda.is_available():
            state["cuda_rng_states"] = torch.cuda.get_rng_state_all()
        if self.ctx.is_distributed:
            own = {"torch": torch.get_rng_state()}
            if self.ctx.device.type == "cuda":
                own["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
            state["world_size"] = self.ctx.world_size
            state["rank_rng_states"] = self.ctx.all_gather_object(own)
        return state

    def restore(self, state: dict[str, Any]) -> int:
        """Load `capture`'s dict (weights apart); returns its step."""
        try:
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            self.rates.load_state_dict(state.get("base_lrs"))
            step = int(state["step"])
            self._restore_noise(state, step)
            self.data_rng.set_state(state["epoch_rng_state"])
            _check_optimizer_shapes(self.optimizers)
            return step
        except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"training state does not match this model ({e})") from None

    def _restore_noise(self, state: dict[str, Any], step: int) -> None:
        ctx = self.ctx
        saved_world_size = int(state.get("world_size", 1))
        if saved_world_size == ctx.world_size == 1:
            torch.set_rng_state(state["torch_rng_state"])
            if "cuda_rng_states" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng_states"])
        elif saved_world_size == ctx.world_size:
            own = state["rank_rng_states"][ctx.rank]
            torch.set_rng_state(own["torch"])
            if "cuda" in own and ctx.device.type == "cuda":
                torch.cuda.set_rng_state(own["cuda"], ctx.device)
        else:
            if ctx.is_main:
                tqdm.write(
                    f"warning: the checkpoint was written by {saved_world_size} "
                    f"process(es), this run has {ctx.world_size}: training noise is "
                    "reseeded, so it will not repeat an uninterrupted run exactly"
                )
            torch.manual_seed(distributed.rank_seed(self.seed, ctx.rank, step))

    def weights_finite(self) -> bool:
        """Whether every floating tensor of the model (what a checkpoint saves) is finite."""
        floats = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        return not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats]).all())

    def roll_back(self, run_dir: Path, *, step: int, what: str, lr_factor: float) -> int:
        """Reload the last good checkpoint (read by rank 0, sent to all) and scale its
        learning rates by `lr_factor`; returns the step it was written at."""
        _, saved, state = self.ctx.run_on_main(lambda: _rollback_target(run_dir, step, what))
        self.model.load_state_dict(saved.weights)
        for k, v in saved.ema.items():
            self.ema[k].copy_(v)
        restore_guide(self.model, saved)
        restored_step = self.restore(state)
        self.rates.scale(lr_factor)
        return restored_step


def restore_guide(model: Family, saved: ckpt.Checkpoint) -> None:
    """The run's own autoguidance guide as `saved` holds it: none before
    `train.keep_guide_at`, so a rollback past that point takes it again."""
    if saved.guide:
        model.keep_guide(saved.guide)
    elif getattr(model, "has_own_guide", False):
        model.set_guide(None)


def _rollback_target(
    run_dir: Path, step: int, what: str
) -> tuple[Path, ckpt.Checkpoint, dict[str, Any]]:
    try:
        return latest_good_checkpoint(run_dir)
    except CheckpointError:
        raise TrainingDivergedError(
            f"{what} became non-finite at step {step + 1} before any "
            "checkpoint was written; lower train.lr"
        ) from None


def _check_optimizer_shapes(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Loading an optimizer's state checks the parameter counts, not the shapes, so a state
    saved for another network would fail at the first step, deep in torch."""
    for name, opt in optimizers.items():
        for param, values in opt.state.items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"optimizer {name!r} holds {key} of shape "
                        f"{tuple(value.shape)} for a parameter of shape "
                        f"{tuple(param.shape)}"
                    )


# ---------------------------------------------------------------- checkpoints


class Checkpoints:
    """Writes a run's checkpoints: every `checkpoint_every_n_steps`, on a stop, at the end.

    Only the newest `keep_checkpoints` periodic ones are kept. Every rank calls `save` (the
    replicas are compared and their RNG states gathered first); rank 0 writes.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: RunConfig,
        state: TrainingState,
        sync: distributed.ReplicaSync,
        data: ImageDataset,
    ) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.state = state
        self.sync = sync
        self.extra = {"class_names": data.class_names, "dataset": data.name}
        self.newest: tuple[int, Path] | None = None  # (step, folder) of the last periodic one

    def save(
        self, folder: Path, step: int, epoch_rng_state: torch.Tensor, train_seconds: float
    ) -> Path:
        """A checkpoint of the state after `step` steps into `folder`."""
        self.sync.check_identical(self.state.ema)
        training_state = self.state.capture(step, epoch_rng_state, train_seconds)
        model, cfg, ema, extra = self.state.model, self.cfg, self.state.ema, self.extra
        guide = model.own_guide_weights() if hasattr(model, "own_guide_weights") else None
        return self.state.ctx.run_on_main(
            lambda: ckpt.save_checkpoint(
                folder,
                model=model,
                config=cfg,
                step=step,
                ema=ema,
                state=training_state,
                extra=extra,
                guide=guide,
            )
        )

    def save_step(self, step: int, epoch_rng_state: torch.Tensor, train_seconds: float) -> Path:
        """checkpoints/step_NNNNNNN, once per step (a stop request right after a periodic
        checkpoint reuses it), pruning the oldest."""
        if self.newest is not None and self.newest[0] == step:
            return self.newest[1]
        folder = self.save(
            self.run_dir / "checkpoints" / f"step_{step:07d}", step, epoch_rng_state, train_seconds
        )
        self.newest = (step, folder)
        if self.state.ctx.is_main:
            for old in ckpt.list_checkpoints(self.run_dir)[: -self.cfg.train.keep_checkpoints]:
                files.remove_folder(old)
        return folder

    def forget_newest(self) -> None:
        """After a rollback: the same step's state will differ, so write it again."""
        self.newest = None
