"""The one training loop, shared by every family.

Set up (seed, device, data, model, optimizers, EMA, a resumed state), then per step: the
next batch -> the family's `train_step` -> all ranks agree that losses and weights are
finite -> after-step work (EMA, metrics, grids, evaluation, checkpoints, stop requests);
at the end the final checkpoint, `summary.json`, loss curves and visuals. Everything
family-specific happens in `train_step`. Under `torchrun` with several processes it trains
data-parallel (`fashiongen.distributed`): each rank takes its slice of every global batch,
and only rank 0 writes files, logs and prints (the writers in `outputs` and `log` do nothing
elsewhere).

Crash safety: checkpoints are written atomically (`checkpoint.py`), so a run killed at any
moment resumes from its newest readable checkpoint, losing at most one checkpoint interval
(`state.py`). Divergence: a non-finite loss is caught at the step it happens, and non-finite
weights (which a step can produce while its losses look finite) at every step whose state is
logged or saved, before anything is written. Either rolls the run back to its last
checkpoint with a lower learning rate (up to `MAX_ROLLBACKS` times in a row) or stops it
(`train.on_nonfinite = "stop"`); non-finite weights are never saved.

Run folder layout (`run_folder.py` locks it):
  .fashiongen.lock (the PID of the process writing the run)
  config.toml, metrics.csv, summary.json, loss_curves.png, progress.gif
  samples/epoch_0001.png ...
  checkpoints/step_0000500/{weights.safetensors,state.pt} ...   (the last few)
  final/{weights.safetensors,state.pt}
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fashiongen import checkpoint as ckpt
from fashiongen import distributed, precision
from fashiongen.config import RunConfig, replace
from fashiongen.data import ImageDataset, load_from_config
from fashiongen.device import compile_networks, select_device
from fashiongen.errors import ConfigError, TrainingDivergedError, TrainingInterruptedError
from fashiongen.images import to_model_range
from fashiongen.models import build_model
from fashiongen.models.base import Family, Student
from fashiongen.training.ema import ema_decay_at, init_ema, update_ema
from fashiongen.training.log import MetricsLog, ProgressBar
from fashiongen.training.outputs import RunOutputs
from fashiongen.training.run_folder import run_folder
from fashiongen.training.schedule import LearningRates, lr_factor_at, uses_schedule
from fashiongen.training.state import (
    Checkpoints,
    Progress,
    TrainingState,
    open_for_resume,
    restore_guide,
    resumed_config,
)

EMA_SETTLED = 0.01  # the initial weights' share of the EMA below which it can be a guide
MAX_ROLLBACKS = 3  # rollbacks in a row (without a checkpoint between) before giving up
LR_DECAY_ON_ROLLBACK = 0.5  # per rollback in a row: the n-th multiplies the LR by 0.5**n

Resumed = tuple[Path, ckpt.Checkpoint, dict[str, Any]]  # folder, checkpoint, training state


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


def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dataset: ImageDataset | None = None,
) -> TrainResult:
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
        raise ConfigError(
            "--resume continues the run in --out and --overwrite replaces it: choose one"
        )
    ctx = distributed.setup(cfg.train.device)
    try:
        target = Path(cfg.out_dir)
        with run_folder(target, ctx, resume=resume, overwrite=overwrite) as run_dir:
            result = _train(cfg, ctx, run_dir, resume=resume, progress=progress, dataset=dataset)
        ctx.barrier()  # every rank done before the group goes, so gloo's threads end cleanly
        return dataclasses.replace(
            result, run_dir=target, final_checkpoint=target / result.final_checkpoint.name
        )
    finally:
        distributed.teardown(ctx)


def resolve_run_name(cfg: RunConfig) -> RunConfig:
    """Give runs without an explicit out_dir a fresh folder under runs/."""
    if cfg.out_dir != "runs/default":
        return cfg
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return replace(cfg, out_dir=os.path.join("runs", f"{cfg.model.name}-{stamp}"))


# ---------------------------------------------------------------- the parts of a run


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
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


class _Batches:
    """This rank's slice of each shuffled global batch, on the device, in [-1, 1].

    An epoch's permutation is a function of the data RNG's state at its start, which
    checkpoints store (resume and rollback restore it), so batches repeat exactly.
    """

    def __init__(
        self,
        data: ImageDataset,
        cfg: RunConfig,
        ctx: distributed.DistContext,
        device: torch.device,
        rng: torch.Generator,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size = cfg.train.batch_size
        self.steps_per_epoch = len(data) // self.batch_size
        self.ctx = ctx
        self.device = device
        self.rng = rng
        self.perm: torch.Tensor | None = None
        self.epoch_rng_state = rng.get_state()

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of step `step` (0-based): images (B, C, H, W) and labels (B,)."""
        index_in_epoch = step % self.steps_per_epoch
        if self.perm is None or index_in_epoch == 0:
            self.epoch_rng_state = self.rng.get_state()
            self.perm = torch.randperm(len(self.images), generator=self.rng).to(self.device)
        start = index_in_epoch * self.batch_size
        batch_index = self.ctx.shard(self.perm[start : start + self.batch_size])
        return to_model_range(self.images[batch_index]), self.labels[batch_index]

    def rng_state_at(self, step: int) -> torch.Tensor:
        """The data RNG state at the start of the epoch that step `step` belongs to."""
        if step % self.steps_per_epoch == 0 or self.perm is None:
            return self.rng.get_state()
        return self.epoch_rng_state

    def restart(self) -> None:
        """After a rollback restored the RNG: draw the epoch's permutation again."""
        self.perm = None


@dataclass
class _Run:
    """What the set-up built for one training session (the loop's counters apart)."""

    cfg: RunConfig
    ctx: distributed.DistContext
    run_dir: Path
    device: torch.device
    total_steps: int
    state: TrainingState
    sync: distributed.ReplicaSync
    batches: _Batches
    checkpoints: Checkpoints
    outputs: RunOutputs
    log: MetricsLog
    bar: ProgressBar
    amp: torch.autocast
    budget_clock: Callable[[], float]  # `train.clock`: CPU or wall seconds

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch


@dataclass
class _StepOutcome:
    verdict: distributed.StepVerdict
    seconds: float  # wall time
    budget_seconds: float  # on the budget's clock
    stop_requested: bool
    out_of_time: bool


# ---------------------------------------------------------------- set-up


def _train(
    cfg: RunConfig,
    ctx: distributed.DistContext,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    dataset: ImageDataset | None,
) -> TrainResult:
    """Set up, train, finish: `train` inside its locked run folder."""
    resumed = ctx.run_on_main(lambda: open_for_resume(run_dir)) if resume else None
    if resumed is not None:
        saved = resumed[1].config
        cfg = resumed_config(saved, replace(cfg, out_dir=saved.out_dir))
    run, counters = _set_up(cfg, ctx, run_dir, resumed, show_progress=progress, dataset=dataset)
    # torchrun forwards Ctrl-C / SIGTERM to every worker; `agree_to_stop` makes them all
    # checkpoint at the same step.
    with _StopRequest() as stop, run.log, contextlib.closing(run.sync):
        out_of_time = _run_steps(run, counters, stop)
    return _finish(run, counters, out_of_time, resumed_from=resumed[0] if resumed else None)


def _set_up(
    cfg: RunConfig,
    ctx: distributed.DistContext,
    run_dir: Path,
    resumed: Resumed | None,
    *,
    show_progress: bool,
    dataset: ImageDataset | None,
) -> tuple[_Run, Progress]:
    """Build everything the loop needs, checking the config against the data first."""
    device = _seed_and_device(cfg, ctx)
    data, total_steps = _training_data(cfg, ctx, dataset)
    state, step = _training_state(cfg, ctx, device, data, resumed)
    sync = distributed.ReplicaSync(ctx, state.model, state.optimizers)
    sync.broadcast_from_main(state.ema)
    outputs = RunOutputs(run_dir, cfg, state.model, state.ema, data, enabled=ctx.is_main)
    if resumed is not None:
        outputs.note(f"resuming from {resumed[0]} (step {step})")
    outputs.start()
    batches = _Batches(data, cfg, ctx, device, state.data_rng)
    log = MetricsLog(
        run_dir, cfg, truncate_after=step if resumed is not None else None, enabled=ctx.is_main
    )
    state.model.train()
    chosen = ctx.run_on_main(
        lambda: _choose_precision(cfg, ctx, device, state.model, data, resumed)
    )
    state.precision = chosen.as_dict()
    amp = precision.autocast(chosen.choice, device)
    if cfg.train.compile:  # once every setup check has passed
        compile_networks(state.model, device, announce=ctx.is_main)
    seconds = float(resumed[2].get("train_seconds", 0.0)) if resumed is not None else 0.0
    if chosen.probe is not None:  # training work: budgets count the probe
        seconds += chosen.probe[f"{cfg.train.clock}_seconds"]
    counters = Progress(step=step, train_seconds=seconds)
    bar = ProgressBar(
        cfg,
        step=step,
        total_steps=total_steps,
        train_seconds=seconds,
        show=show_progress,
        enabled=ctx.is_main,
    )
    run = _Run(
        cfg=cfg,
        ctx=ctx,
        run_dir=run_dir,
        device=device,
        total_steps=total_steps,
        state=state,
        sync=sync,
        batches=batches,
        checkpoints=Checkpoints(run_dir, cfg, state, sync, data),
        outputs=outputs,
        log=log,
        bar=bar,
        amp=amp,
        budget_clock=time.process_time if cfg.train.clock == "cpu" else time.perf_counter,
    )
    return run, counters


def _seed_and_device(cfg: RunConfig, ctx: distributed.DistContext) -> torch.device:
    """Seed torch, set its threads, pick the device (the process group's, distributed)."""
    torch.manual_seed(cfg.seed)
    num_threads = cfg.train.num_threads or ctx.default_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    device = select_device(cfg.train.device)
    if ctx.is_distributed:
        if device.type != ctx.device.type:
            raise ConfigError(
                f"this run trains on {device.type} but the processes were "
                f"started for {ctx.device.type}: pass --set train.device="
                f"{device.type}"
            )
        device = ctx.device
    ctx.check_batch_size(cfg.train.batch_size)
    return device


def _training_data(
    cfg: RunConfig, ctx: distributed.DistContext, dataset: ImageDataset | None
) -> tuple[ImageDataset, int]:
    """The training set and the run's number of steps, once the config fits the data."""
    with ctx.local_main_first():  # a node's first process downloads, the others then read
        data = dataset if dataset is not None else load_from_config(cfg.data, "train")
    if cfg.model.num_classes > len(data.class_names):
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {data.name} has "
            f"{len(data.class_names)} classes"
        )
    steps_per_epoch = len(data) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{data.name} has {len(data)} images, fewer than "
            f"train.batch_size={cfg.train.batch_size}"
        )
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    return data, total_steps


def _choose_precision(
    cfg: RunConfig,
    ctx: distributed.DistContext,
    device: torch.device,
    model: Family,
    data: ImageDataset,
    resumed: Resumed | None,
) -> precision.PrecisionChoice:
    """`train.precision`: a resumed run's recorded choice, or as configured, `auto` probing
    this rank's share of the first batch (rank 0 decides for every rank)."""
    if resumed is not None:
        kept = precision.resumed_choice(cfg.train.precision, resumed[2].get("precision"), device)
        if kept is not None:
            return kept
    index = ctx.shard(torch.arange(cfg.train.batch_size))
    batch = (to_model_range(data.images[index].to(device)), data.labels[index].to(device))
    return precision.choose_for_training(cfg.train.precision, model, cfg.train, batch, device)


def _training_state(
    cfg: RunConfig,
    ctx: distributed.DistContext,
    device: torch.device,
    data: ImageDataset,
    resumed: Resumed | None,
) -> tuple[TrainingState, int]:
    """A fresh model and its optimizers, or the resumed checkpoint's; and the step."""
    model = build_model(cfg.model, data.image_shape).to(device)
    if cfg.train.keep_guide_at and "guide" not in model.sampling_fields:
        raise ConfigError(
            f"train.keep_guide_at keeps an autoguidance guide, which a {cfg.model.name} "
            "model does not take (DDPM models do)"
        )
    optimizers = model.make_optimizers(cfg.train)
    data_rng = torch.Generator().manual_seed(cfg.seed)
    if resumed is None:
        if isinstance(model, Student):  # a resumed one has the teacher in its checkpoint
            teacher, _ = ckpt.load_model(ckpt.model_source(model.teacher_source), device=device)
            start = None
            if model.start_source != model.teacher_source:
                start, _ = ckpt.load_model(ckpt.model_source(model.start_source), device=device)
            model.adopt_teacher(teacher, start)
        if ctx.is_distributed:  # each rank its own noise
            torch.manual_seed(distributed.rank_seed(cfg.seed, ctx.rank))
        ema = init_ema(model, cfg.train.ema_decay)
        return TrainingState(
            model, optimizers, LearningRates(optimizers), ema, data_rng, ctx, cfg.seed
        ), 0
    _, saved, saved_state = resumed
    ckpt.check_weights_fit(model, {**saved.weights, **saved.ema}, saved)
    model.load_state_dict(saved.weights)
    restore_guide(model, saved)
    ema = init_ema(model, cfg.train.ema_decay)
    for k, v in saved.ema.items():
        if k in ema:
            ema[k] = v.to(device)
    state = TrainingState(
        model, optimizers, LearningRates(optimizers), ema, data_rng, ctx, cfg.seed
    )
    return state, state.restore(saved_state)


# ---------------------------------------------------------------- the loop


def _run_steps(run: _Run, counters: Progress, stop: _StopRequest) -> bool:
    """Train until the last step, a stop request or the budget; True when out of time."""
    while counters.step < run.total_steps:
        outcome = _train_step(run, counters, stop)
        if not outcome.verdict.finite:
            _roll_back(run, counters, outcome.verdict.bad_key)
            continue
        _count_step(run, counters, outcome)
        _after_step(run, counters)
        stop_now, out_of_time = run.sync.agree_to_stop(outcome.stop_requested, outcome.out_of_time)
        if out_of_time:
            run.log.flush(
                counters.step, counters.step / run.steps_per_epoch, counters.train_seconds
            )
            return True
        if stop_now:
            _stop(run, counters)
    return False


def _train_step(run: _Run, counters: Progress, stop: _StopRequest) -> _StepOutcome:
    """One optimisation step on the next batch, and every rank's verdict on it."""
    cfg, step, model = run.cfg, counters.step, run.state.model
    batch = run.batches.get(step)
    if uses_schedule(cfg.train):
        run.state.rates.set_factor(lr_factor_at(cfg.train, step, run.total_steps))
    started, clock_started = time.perf_counter(), run.budget_clock()
    with run.amp:
        losses = model.train_step(batch, run.state.optimizers)
    # Read once, so that a signal arriving later waits for the next step's checks.
    stop_requested = stop.signal is not None
    out_of_time = (
        cfg.train.max_minutes is not None
        and counters.train_seconds + run.budget_clock() - clock_started
        >= 60 * cfg.train.max_minutes
    )
    next_step = step + 1
    state_leaves = (
        next_step % cfg.train.log_every_n_steps == 0
        or next_step % cfg.train.checkpoint_every_n_steps == 0
        or next_step >= run.total_steps
        or stop_requested
        or out_of_time
    )
    # Reading every weight costs time: only a state that is logged or saved is checked.
    weights_finite = not state_leaves or run.state.weights_finite()
    verdict = run.sync.agree_on_step(losses, weights_finite=weights_finite)
    if verdict.finite:
        update_ema(run.state.ema, model, ema_decay_at(cfg.train, step))
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return _StepOutcome(
        verdict,
        time.perf_counter() - started,
        run.budget_clock() - clock_started,
        stop_requested,
        out_of_time,
    )


def _roll_back(run: _Run, counters: Progress, what: str) -> None:
    """Back to the last checkpoint with a lower learning rate, or stop for good."""
    counters.rollbacks += 1
    if run.cfg.train.on_nonfinite == "stop" or counters.rollbacks > MAX_ROLLBACKS:
        tries = (
            f" again after {MAX_ROLLBACKS} rollbacks in a row"
            if counters.rollbacks > MAX_ROLLBACKS
            else ""
        )
        raise TrainingDivergedError(
            f"{what} became non-finite at step {counters.step + 1}{tries}; lower train.lr or "
            "resume from the last checkpoint (no non-finite weights were saved)"
        )
    lr_factor = LR_DECAY_ON_ROLLBACK**counters.rollbacks
    counters.step = run.state.roll_back(
        run.run_dir, step=counters.step, what=what, lr_factor=lr_factor
    )
    run.batches.restart()
    run.log.rewind(counters.step)
    run.checkpoints.forget_newest()
    run.bar.rewind(counters.step)
    lowered = (
        "learning rate halved"
        if counters.rollbacks == 1
        else f"learning rate x{lr_factor:g} ({counters.rollbacks} rollbacks in a row)"
    )
    run.bar.write(f"{what} non-finite: rolled back to step {counters.step}, {lowered}")


def _count_step(run: _Run, counters: Progress, outcome: _StepOutcome) -> None:
    """A good step: count it, log its losses, move the bar."""
    batch_size = run.cfg.train.batch_size
    counters.step += 1
    counters.train_seconds += outcome.budget_seconds
    counters.session_seconds += outcome.seconds
    counters.images_seen += batch_size
    run.log.add(outcome.verdict.losses, batch_size, outcome.seconds)
    run.bar.advance(counters.train_seconds)
    step = counters.step
    if step % run.cfg.train.log_every_n_steps == 0 or step == run.total_steps:
        row = run.log.flush(step, step / run.steps_per_epoch, counters.train_seconds)
        run.bar.show_row(step, row)


def _after_step(run: _Run, counters: Progress) -> None:
    """The guide when it is due; an epoch's grid and evaluation when one ends; a
    checkpoint every N steps."""
    train_cfg, step = run.cfg.train, counters.step
    if train_cfg.keep_guide_at and run.state.model.guide is None:
        _keep_guide_when_due(run, counters)
    epoch, into_epoch = divmod(step, run.steps_per_epoch)
    if into_epoch == 0 and epoch % train_cfg.grid_every_n_epochs == 0:
        run.outputs.write_grid(epoch)
        counters.last_grid_step = step
    every = train_cfg.eval_every_n_epochs
    if into_epoch == 0 and every and epoch % every == 0:
        run.outputs.evaluate(step, epoch, run.bar)
    if step % train_cfg.checkpoint_every_n_steps == 0 and step < run.total_steps:
        _checkpoint(run, counters)
        counters.rollbacks = 0  # got past the last failure to a new good state


def _keep_guide_when_due(run: _Run, counters: Progress, *, at_end: bool = False) -> None:
    """At `train.keep_guide_at` of the run's length, freeze the sampling (EMA) weights as
    the model's autoguidance guide: once the EMA has forgotten the initial weights (a guide
    still holding them steers the samples into noise: FID 1.58 -> 4.44), at the end at the
    latest."""
    train_cfg = run.cfg.train
    done = counters.step / run.total_steps
    if train_cfg.max_minutes is not None:
        done = max(done, counters.train_seconds / (60 * train_cfg.max_minutes))
    ema_settled = (
        not run.state.ema
        or train_cfg.use_ema_warmup
        or train_cfg.ema_decay**counters.step < EMA_SETTLED
    )
    if at_end or (done >= train_cfg.keep_guide_at and ema_settled):
        model = run.state.model
        model.keep_guide({**model.state_dict(), **run.state.ema})
        run.bar.write(f"kept the sampling weights of step {counters.step} as the guide")


def _checkpoint(run: _Run, counters: Progress) -> Path:
    step = counters.step
    return run.checkpoints.save_step(step, run.batches.rng_state_at(step), counters.train_seconds)


def _stop(run: _Run, counters: Progress) -> None:
    """A stop request (Ctrl-C, SIGTERM): checkpoint and say how to continue."""
    run.log.flush(counters.step, counters.step / run.steps_per_epoch, counters.train_seconds)
    folder = _checkpoint(run, counters)
    run.bar.close()
    raise TrainingInterruptedError(
        f"interrupted at step {counters.step}; checkpoint saved to {folder}; "
        f"continue with: fashiongen train --resume --out {run.run_dir}"
    )


# ---------------------------------------------------------------- the end


def _finish(
    run: _Run, counters: Progress, out_of_time: bool, *, resumed_from: Path | None
) -> TrainResult:
    """The family's last work, a last grid, the final checkpoint, the summary and figures."""
    run.bar.close()
    model, step = run.state.model, counters.step
    epochs_done = step / run.steps_per_epoch
    finishing = run.budget_clock()
    sampling_changed = model.finish_training(run.batches.images, run.batches.labels)
    counters.train_seconds += run.budget_clock() - finishing  # training work: budgets count it
    if run.cfg.train.keep_guide_at and model.guide is None:  # a run too short to keep one
        _keep_guide_when_due(run, counters, at_end=True)
    if counters.last_grid_step != step or sampling_changed:
        run.outputs.write_grid(max(1, math.ceil(epochs_done)))
    final = run.checkpoints.save(
        run.run_dir / "final", step, run.batches.rng_state_at(step), counters.train_seconds
    )
    images_per_second = (
        counters.images_seen / counters.session_seconds if counters.session_seconds else 0.0
    )
    summary = {
        "family": run.cfg.model.name,
        "steps": step,
        "epochs": epochs_done,
        "train_seconds": counters.train_seconds,
        "train_images_per_second": images_per_second,
        "device": str(run.device),
        "num_threads": torch.get_num_threads(),
        "precision": run.state.precision,
        "resumed_from": str(resumed_from) if resumed_from else None,
    }
    if run.ctx.is_distributed:
        summary["world_size"] = run.ctx.world_size
        summary["replica_resyncs"] = run.sync.num_resyncs
    run.outputs.finish(summary)
    run.ctx.barrier()  # every rank returns once rank 0 has written everything
    return TrainResult(
        run.run_dir,
        final,
        step,
        epochs_done,
        counters.train_seconds,
        images_per_second,
        family=run.cfg.model.name,
        stop_reason=_stop_reason(run.cfg, step, run.steps_per_epoch, out_of_time),
    )


def _stop_reason(cfg: RunConfig, step: int, steps_per_epoch: int, out_of_time: bool) -> str:
    if out_of_time:
        return f"the budget of train.max_minutes={cfg.train.max_minutes:g} ({cfg.train.clock} time)"
    if (
        cfg.train.max_steps is not None
        and cfg.train.max_steps <= step
        and cfg.train.max_steps < cfg.train.epochs * steps_per_epoch
    ):
        return f"train.max_steps={cfg.train.max_steps}"
    return f"train.epochs={cfg.train.epochs}"
