"""The one training loop, shared by every family.

It owns what is common to all of them: seeding, device, the in-memory dataset and its
shuffled batches, EMA of the sampling networks, checkpoints (every N steps, at the end,
and on Ctrl-C), exact resumption, divergence handling, `metrics.csv` (and TensorBoard when
installed), a progress bar, per-epoch sample grids from fixed noise, and the final loss
curves and progress animation. Everything family-specific happens in `train_step`.
Under `torchrun` with several processes it trains data-parallel: the collectives live in
`fashiongen.distributed`; here, each rank takes its slice of every global batch, and only
rank 0 writes files, logs and prints.

Crash safety: checkpoints are written atomically (`checkpoint.py`), so a run killed at any
moment resumes from its newest readable checkpoint, losing at most one checkpoint interval;
unreadable checkpoints are skipped with a warning. Divergence: a non-finite loss is caught at
the step it happens, and non-finite weights (which a step can produce while its losses look
finite) at every step whose state is logged or saved, before anything is written. Either rolls
the run back to its last checkpoint with a lower learning rate (up to `MAX_ROLLBACKS` times
in a row) or stops it (`train.on_nonfinite = "stop"`); non-finite weights are never saved.

One process writes a run folder at a time: it holds the folder's lock (`fashiongen.files`,
an flock on `.fashiongen.lock`, rank 0 under torchrun) from start to end.

Run folder layout:
  .fashiongen.lock (the PID of the process writing the run)
  config.toml, metrics.csv, summary.json, loss_curves.png, progress.gif
  samples/epoch_0001.png ...
  checkpoints/step_0000500/{weights.safetensors,state.pt} ...   (the last few)
  final/{weights.safetensors,state.pt}
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fashiongen import checkpoint as ckpt
from fashiongen import distributed, files
from fashiongen.config import (
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    read_toml,
    replace,
    to_toml,
)
from fashiongen.data import ImageDataset, load_from_config
from fashiongen.errors import (
    CheckpointError,
    ConfigError,
    FashiongenError,
    OutputExistsError,
    TrainingDivergedError,
    TrainingInterruptedError,
)
from fashiongen.images import save_grid, to_model_range, to_uint8
from fashiongen.models import build_model
from fashiongen.models.base import Family

MAX_ROLLBACKS = 3  # rollbacks in a row (without a checkpoint between) before giving up
LR_DECAY_ON_ROLLBACK = 0.5  # per rollback in a row: the n-th multiplies the LR by 0.5**n
BASE_LR_KEY = "base_lr"  # a param group's rate before the schedule's factor
WEIGHTS_KEY = "weights"  # reported beside the losses when the weights become non-finite


@dataclass
class TrainResult:
    run_dir: Path
    final_checkpoint: Path
    steps: int
    epochs: float
    train_seconds: float
    images_per_second: float
    family: str = ""  # the run's family (a resumed run's own, whatever was asked)
    stop_reason: str = ""  # what ended training: `train.epochs`, `train.max_steps` or budget


# What `train --resume` may change in a run's config: how long and how it trains, where its
# data lives, how its grids sample. Anything else (family, network shape, dataset, seed) would
# make the checkpoint another run's, so a change to it is refused.
RESUME_SAFE_KEYS = ("train.", "data.data_dir", "sample.", "out_dir")


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
    return ConfigError(f"--resume cannot change {key} ({old!r} -> {new!r}): the checkpoint "
                       "is of the run as it was; drop the change, or train into a new --out")


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


def _stop_reason(cfg: RunConfig, step: int, steps_per_epoch: int, out_of_time: bool) -> str:
    if out_of_time:
        return f"the budget of train.max_minutes={cfg.train.max_minutes:g} ({cfg.train.clock} time)"
    if cfg.train.max_steps is not None and cfg.train.max_steps <= step \
            and cfg.train.max_steps < cfg.train.epochs * steps_per_epoch:
        return f"train.max_steps={cfg.train.max_steps}"
    return f"train.epochs={cfg.train.epochs}"


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is 'mps' but MPS is not available")
    return torch.device(name)


def compile_networks(model: Family, device: torch.device, *, announce: bool = True) -> None:
    """`train.compile`: compile the family's networks in place, or say why not and train
    eagerly. A tiny function is compiled (forward and backward) first, so a missing or broken
    C++ compiler (inductor needs one for CPU code) is a warning, not a failed run; a network
    whose own forward fails to compile later runs eagerly too (dynamo's suppress_errors)."""
    problem = None
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        problem = "no C++ compiler was found"
    else:
        try:
            probe = torch.ones(4, device=device, requires_grad=True)
            torch.compile(lambda x: (x.sin() * 2).sum())(probe).backward()
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
            problem = f"compiling failed ({str(error).strip().splitlines()[0][:160]})"
    if problem:
        if announce:
            tqdm.write(f"warning: train.compile: {problem}; training without compiling",
                       file=sys.stderr)
        return
    torch._dynamo.config.suppress_errors = True
    # Compile afresh: shapes an earlier run in this process saw would otherwise make this one
    # compile dynamic-shape kernels, which round differently (the same seed, other bytes).
    torch._dynamo.reset()
    model.compile_networks()  # quietly: stderr stays for warnings and the one error line


# ---------------------------------------------------------------- EMA


def ema_keys(model: Family) -> list[str]:
    """State-dict keys of the sampling networks whose EMA is kept."""
    prefixes = tuple(f"{name}." for name in model.ema_module_names)
    return [k for k in model.state_dict() if k.startswith(prefixes)]


def init_ema(model: Family, decay: float) -> dict[str, torch.Tensor]:
    if decay <= 0:
        return {}
    state = model.state_dict()
    return {k: state[k].detach().clone() for k in ema_keys(model)}


def ema_decay_at(train_cfg: TrainConfig, step: int) -> float:
    """The EMA decay used after step `step` (0-based): `ema_decay`, warmed up if asked."""
    if train_cfg.use_ema_warmup:
        return min(train_cfg.ema_decay, (1 + step) / (10 + step))
    return train_cfg.ema_decay


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: Family, decay: float) -> None:
    """Floating tensors move towards the model's by (1 - decay); others (BN counts) copy."""
    if not ema:
        return
    state = model.state_dict()
    floats = [k for k in ema if ema[k].is_floating_point()]
    torch._foreach_lerp_([ema[k] for k in floats], [state[k] for k in floats], 1.0 - decay)
    for k in ema.keys() - set(floats):
        ema[k].copy_(state[k])


@contextlib.contextmanager
def ema_weights(model: Family, ema: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily load the EMA weights (for sampling grids), restoring the live ones after."""
    if not ema:
        yield
        return
    live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in ema}
    model.load_state_dict(ema, strict=False)
    try:
        yield
    finally:
        model.load_state_dict(live, strict=False)


# ---------------------------------------------------------------- the loop


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def grid_labels(model: Family, num_samples: int) -> torch.Tensor | None:
    """Conditional grids have one row per class."""
    if not model.num_classes:
        return None
    per_class = max(1, num_samples // model.num_classes)
    return torch.arange(model.num_classes).repeat_interleave(per_class)


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, dataset: ImageDataset | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.data`, writing everything under `cfg.out_dir`.

    One process writes a run folder at a time: it holds the folder's lock (`RunLock`) from
    start to end, and a second one is refused naming its PID.

    Args:
        cfg: the resolved run configuration.
        resume: continue from the run folder's latest readable checkpoint; `cfg` is then the
            run's config with changes, applied where safe (`RESUME_SAFE_KEYS`: length,
            learning rate, data location ...) and refused otherwise (`resumed_config`).
        overwrite: replace whatever `cfg.out_dir` holds (a run, a file, a folder) once the
            new run is complete; it is trained in a hidden folder beside it meanwhile.
            Without it (and without `resume`) the folder must be missing or empty.
        progress: show a progress bar (on a terminal).
        dataset: an already loaded training set (tests); default loads `cfg.data`.

    Launched by torchrun with WORLD_SIZE > 1, every process calls this and they train one
    model data-parallel; `cfg.train.batch_size` is then the global batch; rank 0 holds the
    lock.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: "
                          "choose one")
    ctx = distributed.setup(cfg.train.device)
    try:
        target = Path(cfg.out_dir)
        with _run_folder(target, ctx, resume=resume, overwrite=overwrite) as run_dir:
            result = _train(cfg, ctx, run_dir, resume=resume, progress=progress,
                            dataset=dataset)
        return dataclasses.replace(result, run_dir=target,
                                   final_checkpoint=target / result.final_checkpoint.name)
    finally:
        distributed.teardown(ctx)


@contextlib.contextmanager
def _run_folder(target: Path, ctx: distributed.DistContext, *, resume: bool,
                overwrite: bool) -> Iterator[Path]:
    """The folder a run writes into, locked by rank 0 until training ends: `target` itself,
    or with `overwrite` of a taken `target` a hidden staging folder beside it, swapped with
    `target` once the run is complete (and removed if it is not). A run `target` stays
    locked meanwhile, so nothing else writes it either."""
    staging = target.with_name(f".{target.name}.overwrite{ckpt.TEMP_SUFFIX}")
    locks: list[files.RunLock] = []

    def open_on_main() -> Path:
        if resume:
            if not target.is_dir():
                raise CheckpointError(f"nothing to resume: {target} does not exist")
            # Refused, naming its PID, while another process writes the run; a folder that
            # is no run stays as it was.
            locks.append(files.RunLock(target, keep_file=False).acquire())
            return target
        if _is_free(target) or (target / files.LOCK_FILE).exists():
            locks.append(files.RunLock(target).acquire())
            if _is_free(target):
                return target
        if not overwrite:
            raise _taken(target)
        # One `train --overwrite` of `target` at a time; it clears what a killed one left.
        locks.append(files.RunLock(staging).acquire())
        for leftover in staging.iterdir():
            if leftover.name != files.LOCK_FILE:
                files.remove_tree(leftover)
        return staging

    run_dir = None
    try:
        run_dir = ctx.run_on_main(open_on_main)
        yield run_dir
        if run_dir == staging:
            ctx.run_on_main(lambda: files.move_into_place(staging, target, overwrite=True))
    except BaseException as error:
        if run_dir == staging:
            if ctx.is_main:
                files.remove_tree(staging)
            if isinstance(error, TrainingInterruptedError):
                raise TrainingInterruptedError(
                    f"interrupted before the new run was complete: {target} keeps its "
                    "previous content; run the command again to start afresh") from None
        raise
    finally:
        for lock in reversed(locks):
            lock.release()


def _is_free(folder: Path) -> bool:
    """Missing, or an empty folder (but for its lock file)."""
    if not os.path.lexists(folder):
        return True
    return (folder.is_dir() and not folder.is_symlink()
            and {p.name for p in folder.iterdir()} <= {files.LOCK_FILE})


def _taken(folder: Path) -> FashiongenError:
    if ckpt.list_checkpoints(folder) or (folder / "final").exists() \
            or (folder / files.LOCK_FILE).exists():
        return OutputExistsError(f"run folder {folder} already holds a run: pass --resume to "
                                 "continue it, --overwrite to replace it once the new run is "
                                 "complete, or choose another --out")
    what = "and is not empty" if folder.is_dir() else "(a file)"
    return OutputExistsError(f"{folder} already exists {what}, and is not a run: pass "
                             "--overwrite to replace it once the new run is complete, or "
                             "choose another --out")


def _train(cfg: RunConfig, ctx: distributed.DistContext, run_dir: Path, *, resume: bool,
           progress: bool, dataset: ImageDataset | None) -> TrainResult:
    state: dict[str, Any] = {}
    resumed_from = None
    if resume:
        resumed_from, saved, state = ctx.run_on_main(lambda: _open_for_resume(run_dir))
        cfg = resumed_config(saved.config, replace(cfg, out_dir=saved.config.out_dir))

    torch.manual_seed(cfg.seed)
    num_threads = cfg.train.num_threads or ctx.default_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    device = select_device(cfg.train.device)
    if ctx.is_distributed:
        if device.type != ctx.device.type:
            raise ConfigError(f"this run trains on {device.type} but the processes were "
                              f"started for {ctx.device.type}: pass --set train.device="
                              f"{device.type}")
        device = ctx.device
    ctx.check_batch_size(cfg.train.batch_size)
    with ctx.local_main_first():  # a node's first process downloads, the others then read
        data = dataset if dataset is not None else load_from_config(cfg.data, "train")
    if cfg.model.num_classes > len(data.class_names):
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {data.name} has "
                          f"{len(data.class_names)} classes")
    steps_per_epoch = len(data) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{data.name} has {len(data)} images, fewer than "
                          f"train.batch_size={cfg.train.batch_size}")
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)

    model = build_model(cfg.model, data.image_shape).to(device)
    optimizers = model.make_optimizers(cfg.train)
    data_rng = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resumed_from is not None:
        ckpt.check_weights_fit(model, {**saved.weights, **saved.ema}, saved)
        model.load_state_dict(saved.weights)
    ema = init_ema(model, cfg.train.ema_decay)
    if resumed_from is not None:
        for k, v in saved.ema.items():
            if k in ema:
                ema[k] = v.to(device)
        step = _restore_state(state, optimizers, data_rng, ctx, cfg.seed)
        if ctx.is_main:
            tqdm.write(f"resuming from {resumed_from} (step {step})", file=sys.stderr)
    elif ctx.is_distributed:
        torch.manual_seed(distributed.rank_seed(cfg.seed, ctx.rank))  # each rank its own noise
    sync = distributed.ReplicaSync(ctx, model, optimizers)
    sync.broadcast_from_main(ema)

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        ckpt.write_text_atomic(run_dir / "config.toml", to_toml(cfg))
    images = data.images.to(device)
    labels = data.labels.to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16,
                         enabled=cfg.train.use_amp and device.type == "cuda")
    log = _MetricsLog(run_dir, cfg, truncate_after=step if resumed_from is not None else None,
                      enabled=ctx.is_main)
    grid_generator_seed = cfg.seed + 1
    fixed_labels = grid_labels(model, cfg.train.num_grid_samples)

    def save(folder: Path) -> Path:
        # The data RNG state at the start of the epoch that the next step belongs to.
        at_boundary = step % steps_per_epoch == 0
        rng_state = data_rng.get_state() if at_boundary or perm is None else epoch_rng_state
        sync.check_identical(ema)
        training_state = _training_state(step, optimizers, rng_state, train_seconds, ctx)
        return ctx.run_on_main(lambda: ckpt.save_checkpoint(
            folder, model=model, config=cfg, step=step, ema=ema, state=training_state,
            extra={"class_names": data.class_names, "dataset": data.name}))

    last_checkpoint: dict[int, Path] = {}  # step -> folder of the newest step checkpoint

    def checkpoint_now() -> Path:
        if step in last_checkpoint:  # e.g. a stop request right after a periodic checkpoint
            return last_checkpoint[step]
        folder = save(run_dir / "checkpoints" / f"step_{step:07d}")
        last_checkpoint.clear()
        last_checkpoint[step] = folder
        if ctx.is_main:
            for old in ckpt.list_checkpoints(run_dir)[:-cfg.train.keep_checkpoints]:
                ckpt.remove_checkpoint(old)
        return folder

    def write_grid(epoch: int) -> None:
        if not ctx.is_main:
            return
        generator = torch.Generator().manual_seed(grid_generator_seed)
        with ema_weights(model, ema):
            x0 = model.sample(cfg.train.num_grid_samples if fixed_labels is None
                              else len(fixed_labels), labels=fixed_labels,
                              generator=generator, sampling=cfg.sample)
        save_grid(run_dir / "samples" / f"epoch_{epoch:04d}.png", to_uint8(x0),
                  num_rows=model.num_classes or None)

    def evaluate_now(epoch: int) -> None:
        if not ctx.is_main:
            return
        with ema_weights(model, ema):
            row = _evaluate_during_training(model, cfg, data.name)
        if row is None:
            return
        row = {"step": step, "epoch": epoch, **row}
        _append_csv(run_dir / "eval.csv", row)
        bar.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                if k not in ("step", "epoch")))

    model.train()
    if cfg.train.compile:  # once every setup check has passed
        compile_networks(model, device, announce=ctx.is_main)
    train_seconds = float(state.get("train_seconds", 0.0))  # on `budget_clock`
    budget_clock = time.process_time if cfg.train.clock == "cpu" else time.perf_counter
    last_grid_step = -1
    scheduled = cfg.train.lr_schedule != "constant" or cfg.train.warmup_steps > 0
    session_seconds = 0.0
    images_seen = 0
    rollbacks = 0
    perm = None
    epoch_rng_state = data_rng.get_state()
    # Under a budget the bar counts budget seconds (CPU or wall), so its total and ETA are true.
    budget_seconds = None if cfg.train.max_minutes is None else 60 * cfg.train.max_minutes
    bar = tqdm(total=total_steps if budget_seconds is None else round(budget_seconds, 1),
               initial=step if budget_seconds is None else round(train_seconds, 1),
               # on a terminal only (tqdm's check): logs get the summary lines, not bar frames
               disable=None if progress and ctx.is_main else True, dynamic_ncols=True,
               unit="step" if budget_seconds is None else f"s {cfg.train.clock}",
               desc=f"{cfg.model.name}")
    out_of_time = False
    # torchrun forwards Ctrl-C / SIGTERM to every worker; `agree_to_stop` makes them all
    # checkpoint at the same step.
    with _StopRequest() as stop, log, contextlib.closing(sync):
        while step < total_steps:
            epoch, index_in_epoch = divmod(step, steps_per_epoch)
            if perm is None or index_in_epoch == 0:
                # An epoch's permutation is a function of the RNG state at its start, which
                # checkpoints store (resume and rollback restore it), so batches repeat exactly.
                epoch_rng_state = data_rng.get_state()
                perm = torch.randperm(len(data), generator=data_rng).to(device)
            batch_index = ctx.shard(perm[index_in_epoch * cfg.train.batch_size:
                                         (index_in_epoch + 1) * cfg.train.batch_size])
            batch = (to_model_range(images[batch_index]), labels[batch_index])

            if scheduled:
                set_learning_rates(optimizers, lr_factor_at(cfg.train, step, total_steps))
            started, clock_started = time.perf_counter(), budget_clock()
            with amp:
                losses = model.train_step(batch, optimizers)
            # Read once, so that a signal arriving later waits for the next step's checks.
            stop_requested = stop.signal is not None
            out_of_time = (cfg.train.max_minutes is not None and train_seconds
                           + budget_clock() - clock_started >= 60 * cfg.train.max_minutes)
            next_step = step + 1
            state_leaves = (next_step % cfg.train.log_every_n_steps == 0
                            or next_step % cfg.train.checkpoint_every_n_steps == 0
                            or next_step >= total_steps or stop_requested or out_of_time)
            # The weights' check rides with the losses', so all ranks agree on it too.
            losses = {**losses, WEIGHTS_KEY: 0.0 if not state_leaves or _all_finite(model)
                      else math.nan}
            verdict = sync.agree_on_step(losses)  # all ranks roll back or go on together
            verdict.losses.pop(WEIGHTS_KEY, None)
            if verdict.finite:
                update_ema(ema, model, ema_decay_at(cfg.train, step))
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            budget_elapsed = budget_clock() - clock_started

            if not verdict.finite:
                rollbacks += 1
                bad = verdict.bad_key
                if cfg.train.on_nonfinite == "stop" or rollbacks > MAX_ROLLBACKS:
                    tries = (f" again after {MAX_ROLLBACKS} rollbacks in a row"
                             if rollbacks > MAX_ROLLBACKS else "")
                    raise TrainingDivergedError(
                        f"{bad} became non-finite at step {step + 1}{tries}; lower train.lr or "
                        "resume from the last checkpoint (no non-finite weights were saved)")
                lr_factor = LR_DECAY_ON_ROLLBACK ** rollbacks
                step, perm = _rollback(run_dir, model, optimizers, ema, data_rng, step, bad,
                                       ctx, cfg.seed, lr_factor=lr_factor)
                log.rewind(step)
                last_checkpoint.clear()
                if budget_seconds is None:  # a budget bar counts time, which goes on
                    bar.n = step
                if ctx.is_main:
                    lowered = ("learning rate halved" if rollbacks == 1 else
                               f"learning rate x{lr_factor:g} ({rollbacks} rollbacks in a row)")
                    bar.write(f"{bad} non-finite: rolled back to step {step}, {lowered}")
                continue

            step += 1
            train_seconds += budget_elapsed
            session_seconds += elapsed
            images_seen += cfg.train.batch_size
            log.add(verdict.losses, cfg.train.batch_size, elapsed)
            if budget_seconds is None:
                bar.update(1)
            else:
                bar.update(round(min(train_seconds, budget_seconds) - bar.n, 1))
            if step % cfg.train.log_every_n_steps == 0 or step == total_steps:
                row = log.flush(step, step / steps_per_epoch, train_seconds)
                shown = {k: f"{v:.3g}" for k, v in row.items()
                         if k not in ("step", "epoch", "time_s")}
                bar.set_postfix(shown if budget_seconds is None else {"step": step, **shown},
                                refresh=False)
            epoch_done = step % steps_per_epoch == 0
            if epoch_done and (step // steps_per_epoch) % cfg.train.grid_every_n_epochs == 0:
                write_grid(step // steps_per_epoch)
                last_grid_step = step
            every = cfg.train.eval_every_n_epochs
            if epoch_done and every and (step // steps_per_epoch) % every == 0:
                evaluate_now(step // steps_per_epoch)
            if step % cfg.train.checkpoint_every_n_steps == 0 and step < total_steps:
                checkpoint_now()
                rollbacks = 0  # got past the last failure to a new good state
            stop_now, out_of_time = sync.agree_to_stop(stop_requested, out_of_time)
            if out_of_time:
                log.flush(step, step / steps_per_epoch, train_seconds)
                break
            if stop_now:
                log.flush(step, step / steps_per_epoch, train_seconds)
                folder = checkpoint_now()
                bar.close()
                raise TrainingInterruptedError(
                    f"interrupted at step {step}; checkpoint saved to {folder}; "
                    f"continue with: fashiongen train --resume --out {run_dir}")
    bar.close()

    epochs_done = step / steps_per_epoch
    finishing = budget_clock()
    sampling_changed = model.finish_training(images, labels)  # e.g. the VAE's fitted prior
    train_seconds += budget_clock() - finishing  # it is training work: budgets count it
    if last_grid_step != step or sampling_changed:
        write_grid(max(1, math.ceil(epochs_done)))
    final = save(run_dir / "final")
    images_per_second = images_seen / session_seconds if session_seconds else 0.0
    result = TrainResult(run_dir, final, step, epochs_done, train_seconds, images_per_second,
                         family=cfg.model.name,
                         stop_reason=_stop_reason(cfg, step, steps_per_epoch, out_of_time))
    if not ctx.is_main:
        ctx.barrier()  # return once rank 0 has written everything
        return result
    summary = {
        "family": cfg.model.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sampling_parameters": sum(v.numel() for k, v in model.state_dict().items()
                                   if k in set(ema_keys(model))),
        "steps": step,
        "epochs": epochs_done,
        "train_seconds": train_seconds,
        "train_images_per_second": images_per_second,
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "resumed_from": str(resumed_from) if resumed_from else None,
    }
    if ctx.is_distributed:
        summary["world_size"] = ctx.world_size
        summary["replica_resyncs"] = sync.num_resyncs
    ckpt.write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_figures(run_dir)
    with ema_weights(model, ema):
        _write_visuals(model, cfg, data, run_dir)
    ctx.barrier()
    return result


def _training_state(step: int, optimizers: dict[str, torch.optim.Optimizer],
                    epoch_rng_state: torch.Tensor, train_seconds: float,
                    ctx: distributed.DistContext) -> dict[str, Any]:
    """What resumption needs besides the weights. Distributed, it also holds every rank's
    noise RNG state (a collective: every rank calls it); the rest is rank 0's."""
    state: dict[str, Any] = {
        "step": step,
        "train_seconds": train_seconds,
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "torch_rng_state": torch.get_rng_state(),
        "epoch_rng_state": epoch_rng_state,
    }
    if torch.cuda.is_available():
        state["cuda_rng_states"] = torch.cuda.get_rng_state_all()
    if ctx.is_distributed:
        own = {"torch": torch.get_rng_state()}
        if ctx.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(ctx.device)
        state["world_size"] = ctx.world_size
        state["rank_rng_states"] = ctx.all_gather_object(own)
    return state


def _restore_state(state: dict[str, Any], optimizers: dict[str, torch.optim.Optimizer],
                   data_rng: torch.Generator, ctx: distributed.DistContext, seed: int) -> int:
    try:
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        step = int(state["step"])
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
                tqdm.write(f"warning: the checkpoint was written by {saved_world_size} "
                           f"process(es), this run has {ctx.world_size}: training noise is "
                           "reseeded, so it will not repeat an uninterrupted run exactly")
            torch.manual_seed(distributed.rank_seed(seed, ctx.rank, step))
        data_rng.set_state(state["epoch_rng_state"])
        _check_optimizer_shapes(optimizers)
        return step
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"training state does not match this model ({e})") from None


def _check_optimizer_shapes(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Loading an optimizer's state checks the parameter counts, not the shapes, so a state
    saved for another network would fail at the first step, deep in torch."""
    for name, opt in optimizers.items():
        for param, values in opt.state.items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(f"optimizer {name!r} holds {key} of shape "
                                     f"{tuple(value.shape)} for a parameter of shape "
                                     f"{tuple(param.shape)}")


def _all_finite(model: Family) -> bool:
    """Whether every floating tensor of the model (what a checkpoint saves) is finite."""
    floats = [v for v in model.state_dict().values() if v.is_floating_point()]
    return not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats]).all())


def _open_for_resume(run_dir: Path) -> tuple[Path, ckpt.Checkpoint, dict[str, Any]]:
    """Clear what a killed run left half-written, then pick the checkpoint to resume from,
    refusing one whose family differs from the run's config.toml."""
    if not run_dir.is_dir():
        raise CheckpointError(f"nothing to resume: {run_dir} does not exist")
    for directory in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        ckpt.remove_stale_temporaries(directory)
    folder, saved, state = _latest_good_checkpoint(run_dir)
    _check_one_run(run_dir, folder, saved)
    return folder, saved, state


def check_run_folder(run_dir: Path) -> None:
    """Raise what `train --resume` would find wrong with the run itself (a folder mixing two
    runs, tensors that do not fit their config) before a change asked of it is judged."""
    folder, saved, _ = _latest_good_checkpoint(run_dir)
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
                "train into a new --out")
        with contextlib.suppress(ConfigError):
            if config_from_dict(run_config).model != saved.config.model:
                raise CheckpointError(
                    f"{config_file} describes another {family} than checkpoint {folder} "
                    "holds: the folder mixes two runs; restore its config.toml or train "
                    "into a new --out")


def _latest_good_checkpoint(run_dir: Path) -> tuple[Path, ckpt.Checkpoint, dict[str, Any]]:
    """The newest checkpoint whose weights and state both load; corrupt ones are skipped
    with a one-line warning naming the file (the fallback crash safety relies on)."""
    folders = ckpt.list_checkpoints(run_dir)
    if (run_dir / "final").is_dir():
        folders.append(run_dir / "final")
    if not folders:
        raise CheckpointError(f"nothing to resume: no checkpoints in {run_dir}")
    errors: list[str] = []

    def skip(error: CheckpointError) -> None:
        errors.append(str(error))
        tqdm.write(f"warning: {error}; trying an older checkpoint", file=sys.stderr)

    candidates = []
    for folder in folders:
        try:
            candidates.append((_checkpoint_step(folder), folder))
        except CheckpointError as e:
            skip(e)
    for _, folder in sorted(candidates, reverse=True):
        try:
            saved, state = ckpt.load_checkpoint(folder, with_state=True)
            return folder, saved, state
        except CheckpointError as e:
            skip(e)
    raise CheckpointError(f"no readable checkpoint in {run_dir}: {errors[0]}")


def _checkpoint_step(folder: Path) -> int:
    """The step of a checkpoint folder, from its name or else its header alone.

    Raises:
        CheckpointError: the header is unreadable.
    """
    if folder.name.startswith("step_"):
        with contextlib.suppress(ValueError):
            return int(folder.name.removeprefix("step_"))
    return ckpt.read_step(folder)


def _rollback(run_dir: Path, model: Family, optimizers: dict[str, torch.optim.Optimizer],
              ema: dict[str, torch.Tensor], data_rng: torch.Generator, step: int,
              what: str, ctx: distributed.DistContext, seed: int, *, lr_factor: float
              ) -> tuple[int, None]:
    """Reload the last good checkpoint (read by rank 0, sent to all) and scale its learning
    rates by `lr_factor`."""
    def load() -> tuple[Path, ckpt.Checkpoint, dict]:
        try:
            return _latest_good_checkpoint(run_dir)
        except CheckpointError:
            raise TrainingDivergedError(f"{what} became non-finite at step {step + 1} before "
                                        "any checkpoint was written; lower train.lr") from None

    _, saved, state = ctx.run_on_main(load)
    model.load_state_dict(saved.weights)
    for k, v in saved.ema.items():
        ema[k].copy_(v)
    restored_step = _restore_state(state, optimizers, data_rng, ctx, seed)
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] *= lr_factor
            if BASE_LR_KEY in group:  # a schedule's rates follow from its base
                group[BASE_LR_KEY] *= lr_factor
    return restored_step, None


def lr_factor_at(train_cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning-rate multiplier for step `step` (0-based) of `total_steps`: a linear
    warm-up, then constant or a cosine down to `train_cfg.min_lr_ratio`."""
    warmup = train_cfg.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if train_cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    floor = train_cfg.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rates(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> None:
    """Each param group's rate = its base rate (its configured rate, kept in the optimizer's
    state so that checkpoints carry it) x `factor`."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault(BASE_LR_KEY, group["lr"])
            group["lr"] = group[BASE_LR_KEY] * factor


class _MetricsLog:
    """Averages per-step values over the logging window into metrics.csv (and TensorBoard).

    Keys starting with `event_` are counted, not averaged: they mark events such as a
    discriminator reversion on the loss curves.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig, truncate_after: int | None,
                 enabled: bool = True) -> None:
        self.path = run_dir / "metrics.csv"
        self.truncate_after = truncate_after  # on resume: rows after this step are stale
        self.enabled = enabled  # False on ranks other than 0: rows are built, never written
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.seconds = 0.0
        self.fields: list[str] | None = None
        self.file = None
        self.tensorboard = None
        if cfg.train.use_tensorboard and enabled:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def __enter__(self) -> _MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def add(self, losses: dict[str, float], num_images: int, seconds: float) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.images += num_images
        self.seconds += seconds

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: forget the window, drop rows logged after `step`."""
        self.sums, self.count, self.images, self.seconds = {}, 0, 0, 0.0
        if self.file is not None:
            self.file.close()
            self.file = None
        self.truncate_after = step

    def flush(self, step: int, epoch: float, train_seconds: float) -> dict[str, float]:
        if not self.count:
            return {}
        row = {"step": step, "epoch": round(epoch, 4), "time_s": round(train_seconds, 3)}
        for k, v in self.sums.items():
            row[k] = v if k.startswith("event_") else v / self.count
        row["images_per_s"] = self.images / self.seconds if self.seconds else 0.0
        self.sums, self.count, self.images, self.seconds = {}, 0, 0, 0.0
        if not self.enabled:
            return row
        if self.file is None:
            self.fields = list(row)
            if self.truncate_after is not None and self.path.exists():
                self._truncate_after(self.truncate_after)
            self.truncate_after = None
            new = not self.path.exists() or self.path.stat().st_size == 0
            self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
            if new:
                self.writer.writeheader()
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                              for k, v in row.items()})
        self.file.flush()
        if self.tensorboard is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.tensorboard.add_scalar(k, v, step)
        return row

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (the checkpoint resumed or rolled back to), and any
        row a killed process left half-written."""
        with open(self.path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            kept = [r for r in reader if (s := _row_step(r)) is not None and s <= step]
            fields = reader.fieldnames if reader.fieldnames and "step" in reader.fieldnames \
                else self.fields
        if not kept:
            self.path.unlink()
            return
        with ckpt.atomic_path(self.path) as tmp, open(tmp, "w", newline="",
                                                       encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)


def _row_step(row: dict[str, str | None]) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


def _evaluate_during_training(model: Family, cfg: RunConfig, dataset: str
                              ) -> dict[str, float] | None:
    """FID and friends of the EMA model on `eval_num_samples` balanced samples, or None
    (with a warning) when the dataset has no feature network."""
    from fashiongen.generate import generate
    from fashiongen.metrics import evaluate

    num = cfg.train.eval_num_samples
    labels = torch.arange(num) % model.num_classes if model.num_classes else None
    images = generate(model, num, labels=labels, seed=cfg.seed, sampling=cfg.sample)
    model.train()
    try:
        result = evaluate(images, labels=labels, dataset=dataset, use_memorisation=False,
                          seed=cfg.seed)
    except ConfigError as e:
        tqdm.write(f"warning: no training-time evaluation: {e}")
        return None
    keys = ("fid", "kid_mean", "precision", "recall", "coverage", "class_entropy",
            "per_class_recall", "per_class_coverage", "intra_class_spread")
    return {f"eval_{k}": math.nan if result.get(k) is None else float(result[k]) for k in keys}


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _write_visuals(model: Family, cfg: RunConfig, data: ImageDataset, run_dir: Path) -> None:
    """Interpolations, and reconstructions/traversals for autoencoders (fashiongen.visuals)."""
    from fashiongen.visuals import write_run_visuals

    try:
        held_out = load_from_config(cfg.data, "test")
    except FashiongenError:
        held_out = data
    write_run_visuals(model, run_dir, held_out.images, held_out.labels, seed=cfg.seed,
                      sampling=cfg.sample)
    model.train()


def _write_figures(run_dir: Path) -> None:
    from fashiongen import plots

    curves = plots.loss_curves(run_dir / "metrics.csv")
    if curves is not None:
        plots.save_figure(curves, run_dir / "loss_curves.png")
    frames = sorted((run_dir / "samples").glob("epoch_*.png"))
    if frames:
        plots.progress_animation(frames, run_dir / "progress.gif")


def resolve_run_name(cfg: RunConfig) -> RunConfig:
    """Give runs without an explicit out_dir a fresh folder under runs/."""
    if cfg.out_dir != "runs/default":
        return cfg
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return replace(cfg, out_dir=os.path.join("runs", f"{cfg.model.name}-{stamp}"))
