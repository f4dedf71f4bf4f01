"""Numeric precision of the networks (`train.precision`, `sample.precision`, `--precision`):
fp32, or bf16 autocast where the processor has bf16 matrix units (AVX-512-BF16, AMX; on a
GPU its own), chosen automatically (`auto`) by a short in-process probe of the network.

Under bf16 only the networks' matrix work (matmul, convolution: autocast's list) runs in
bf16; weights, optimizer state, EMA and checkpoints stay fp32 (autocast never changes a
parameter), and the families cast what leaves a network back to fp32, so losses, finite
checks, the VAE's KL, the diffusion schedule and the samplers' arithmetic (elementwise on
fp32 tensors, which autocast leaves alone) are fp32. What needs fp32 matrix work besides the
networks (a GAN's R1/R2 double backward, the VAE prior's matmul) runs in `full_precision`.

`auto` takes bf16 only where `bf16_units` says the device has them and the probe (the same
training step, or a small sampling batch, timed A B A B on a copy) shows bf16 at least
`MIN_SPEEDUP` times faster; otherwise fp32, at the cost of no probe where there are no units.
A probe's verdict is cached per machine (`cache_root()/precision/`, one JSON file per key:
the CPU's model name and flags, torch's version, the device and threads, the family and its
network configuration, the image shape, the batch size and the phase, train or sample), so
the first process decides and every later one reuses it: the same seed gives the same images
from run to run, however noisy the machine. FASHIONGEN_PRECISION_REPROBE=1 probes afresh and
replaces the cached verdict; an unreadable cache file is ignored (and replaced). A training
run records its choice, the CPU flags seen and the probe's numbers in its state (so a
resumed run keeps them) and in summary.json.

Test hook: the environment variable FASHIONGEN_PRECISION_SIMULATE = "no-bf16-units"
simulates a machine without bf16 units; "bf16-slower" or "bf16-faster" one with them whose
probe (still run) gives that verdict, cached like a real one. So the tests run alike on any
x86 CPU (bf16 arithmetic itself works everywhere, emulated where there are no units).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from fashiongen.config import SampleConfig
from fashiongen.errors import ConfigError, OutputExistsError
from fashiongen.files import cache_root, write_text_atomic

if TYPE_CHECKING:
    from fashiongen.config import TrainConfig

# `model` below is a family (fashiongen.models.base.Family), typed as the Module it is:
# models.base calls this module, so naming the family here would close an import circle.

Precision = Literal["auto", "fp32", "bf16"]
Choice = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16")
SIMULATE_ENV = "FASHIONGEN_PRECISION_SIMULATE"
SIMULATIONS = ("no-bf16-units", "bf16-slower", "bf16-faster")
REPROBE_ENV = "FASHIONGEN_PRECISION_REPROBE"  # "1": probe afresh, replace the cached verdict
CACHE_FORMAT = 1  # of the files in cache_root()/precision; another number is not read
# bf16's fastest timing must beat fp32's fastest by this much: below it the gain is within a
# shared machine's noise, and bf16 would win for nothing but a loss of exactness.
MIN_SPEEDUP = 1.10
# Smaller families stay fp32 without a probe: they are bound by per-op overhead, not FLOPs
# (the tests' and the digest's nets, 30k-150k parameters, measured 0.1-1.2x under load, the
# presets 220k-3M), and a fixed choice keeps their byte-identity checks deterministic.
MIN_PARAMETERS = 200_000
# Timings per precision, interleaved fp32 bf16 fp32 bf16 ..., the fastest of each kept: a
# timing is only ever slowed by the machine's other work, so the minimum is the least noisy
# estimate. Short timings, many of them: a burst of load spoils a few, not the verdict. The
# cache makes this a once-per-machine cost.
PROBE_REPEATS = 7
PROBE_TRAIN_STEPS = 1  # training steps per timing
PROBE_SAMPLES = 32  # images per sampling timing (and the sampling key's batch size)
PROBE_SAMPLING_STEPS = 1  # diffusion steps per sampling timing
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


# ---------------------------------------------------------------- what the device has


@functools.cache
@functools.cache
def cpu_flags() -> dict[str, bool]:
    """The /proc/cpuinfo flags that matter to bf16, and torch's own view of them; read once
    per process (every `Family.sample` asks). Do not mutate: callers copy."""
    seen: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                seen = set(line.split(":", 1)[1].split())
                break
    flags = {name: name in seen for name in CPU_FLAGS}
    flags["torch_avx512_bf16"] = bool(torch.cpu._is_avx512_bf16_supported())
    flags["torch_amx_tile"] = bool(torch.cpu._is_amx_tile_supported())
    return flags


def flag_names(flags: dict[str, bool]) -> str:
    """The flags present, comma-separated ("none" where there are none), for reports."""
    return ", ".join(name for name, present in flags.items() if present) or "none"


@functools.cache
def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo ("" where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def bf16_units(device: torch.device, flags: dict[str, bool] | None = None) -> bool:
    """Whether `device` has bf16 matrix units (AVX-512-BF16 or AMX on a CPU; a CUDA GPU
    that supports bf16)."""
    simulated = _simulation()
    if simulated is not None:  # a test hook: a machine without units, or with them
        return simulated != "no-bf16-units"
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        flags = flags if flags is not None else cpu_flags()
        return flags["torch_avx512_bf16"] or flags["torch_amx_tile"]
    return False


def _simulation() -> str | None:
    value = os.environ.get(SIMULATE_ENV)
    if value is not None and value not in SIMULATIONS:
        raise ConfigError(f"{SIMULATE_ENV}={value!r}: choose one of {', '.join(SIMULATIONS)}")
    return value


# ---------------------------------------------------------------- contexts


def autocast(choice: Choice, device: torch.device) -> torch.autocast:
    """bf16 autocast on `device` for `choice` "bf16"; a disabled (no-op) one for "fp32"."""
    return torch.autocast(_autocast_type(device), dtype=torch.bfloat16, enabled=choice == "bf16")


def full_precision(device: torch.device, *, when: bool = True) -> contextlib.AbstractContextManager:
    """fp32 inside a bf16 autocast block (a GAN's gradient penalties, the VAE's prior); with
    `when` False, nothing changes."""
    if not when:
        return contextlib.nullcontext()
    return torch.autocast(_autocast_type(device), enabled=False)


def _autocast_type(device: torch.device) -> str:
    return device.type if device.type in ("cuda", "cpu") else "cpu"


def check_device(precision: Precision, device: torch.device, key: str) -> None:
    """bf16 autocast exists for CPUs and CUDA GPUs only."""
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"{key}='bf16' needs a CPU or CUDA device, not {device.type}: use 'fp32' or 'auto'"
        )


# ---------------------------------------------------------------- the choice


@dataclasses.dataclass
class PrecisionChoice:
    """What `auto` (or the config) decided, and why: the run's summary records it."""

    requested: str
    choice: Choice
    reason: str
    device: str
    cpu_flags: dict[str, bool] = dataclasses.field(default_factory=dict)
    probe: dict[str, Any] | None = None  # seconds per timing for each precision, speedup
    # A verdict reused from the cache (no probe ran in this process): its file, when it was
    # probed, and that probe's numbers
    cached: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> PrecisionChoice:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in fields})


def decide(
    requested: Precision,
    device: torch.device,
    measure: Callable[[], dict[str, Any]],
    *,
    num_parameters: int,
    cache_key: dict[str, Any] | None = None,
) -> PrecisionChoice:
    """fp32 or bf16 as asked; for `auto`, bf16 only with bf16 units, at least MIN_PARAMETERS
    parameters and a probe (`measure`, called only then) showing it at least MIN_SPEEDUP
    times faster. With `cache_key`, the verdict cached under it is reused, or the probe's
    is cached there (`cache_key_for`)."""
    flags = dict(cpu_flags()) if device.type == "cpu" else {}
    made = _recorder(requested, device, flags)
    if requested != "auto":
        return made(requested, f"{requested} as configured")
    if not bf16_units(device, flags or None):
        return made("fp32", "no bf16 matrix units on this device")
    if num_parameters < MIN_PARAMETERS:
        return made(
            "fp32",
            f"{num_parameters:,} parameters: below {MIN_PARAMETERS:,}, "
            "bound by overhead, not FLOPs",
        )
    path = _cache_path(cache_key) if cache_key is not None else None
    if path is not None and os.environ.get(REPROBE_ENV) != "1":
        cached = _read_cached(path, cache_key)
        if cached is not None:
            return cached
    chosen = _probe_verdict(made, measure)
    return _cache(path, cache_key, chosen) if path is not None else chosen


def _probe_verdict(
    made: Callable[..., PrecisionChoice], measure: Callable[[], dict[str, Any]]
) -> PrecisionChoice:
    probe = measure()
    simulated = _simulation()
    if simulated in ("bf16-slower", "bf16-faster"):
        probe["speedup"] = 0.5 if simulated == "bf16-slower" else 2.0
        probe["simulated"] = simulated
    if probe["speedup"] >= MIN_SPEEDUP:
        return made("bf16", f"probe: bf16 {probe['speedup']:.2f}x fp32", probe)
    return made("fp32", f"probe: bf16 {probe['speedup']:.2f}x fp32, below {MIN_SPEEDUP}x", probe)


def _recorder(
    requested: str, device: torch.device, flags: dict[str, bool]
) -> Callable[..., PrecisionChoice]:
    def made(choice: Choice, reason: str, probe: dict | None = None) -> PrecisionChoice:
        return PrecisionChoice(requested, choice, reason, str(device), flags, probe)

    return made


def interleaved_timings(
    run: Callable[[Choice], None], device: torch.device, *, repeats: int = PROBE_REPEATS
) -> dict[str, Any]:
    """Seconds of `run(choice)` for fp32 and bf16, after one warm-up of each, timed in
    turns (fp32 bf16 fp32 bf16 ...) so a change in the machine's load hits both; the
    speedup is the ratio of each precision's fastest timing."""
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for choice in ("fp32", "bf16"):
        run(choice)
    for _ in range(repeats):
        for choice in ("fp32", "bf16"):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            run(choice)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[choice].append(round(time.perf_counter() - started, 5))
    speedup = min(seconds["fp32"]) / max(min(seconds["bf16"]), 1e-9)
    return {
        "fp32_seconds": seconds["fp32"],
        "bf16_seconds": seconds["bf16"],
        "speedup": round(speedup, 3),
    }


@contextlib.contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """The probe draws noise: the run's own RNG streams continue as if it never ran."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


# ---------------------------------------------------------------- the per-machine cache


def cache_key_for(
    phase: Literal["train", "sample"], model: torch.nn.Module, batch_size: int
) -> dict[str, Any]:
    """What a probe's verdict depends on: this machine (CPU model and flags, torch, device,
    threads), the network (family, configuration, image shape), the batch and the phase."""
    return {
        "format": CACHE_FORMAT,
        "phase": phase,
        "cpu_model": cpu_model(),
        "cpu_flags": dict(cpu_flags()),
        "torch": torch.__version__,
        "device": str(model.device),
        "num_threads": torch.get_num_threads(),
        "family": model.config.name,
        "network": repr(model.config),
        "image_shape": list(model.image_shape),
        "batch_size": batch_size,
    }


def cache_folder() -> Path:
    """Where the verdicts live: one small JSON file per cache key (delete it to re-probe)."""
    return cache_root() / "precision"


def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_folder() / f"{key['phase']}-{key['family']}-{digest}.json"


def _read_cached(path: Path, key: dict[str, Any]) -> PrecisionChoice | None:
    """The verdict cached at `path` for `key`; None where there is none or it is unreadable
    (truncated, hand-edited, another format: it is probed again and replaced)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        record = PrecisionChoice.from_dict(saved["choice"])
        if saved["key"] != key or record.choice not in ("fp32", "bf16"):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dataclasses.replace(
        record,
        reason=f"cached: {record.reason}",
        probe=None,
        cached={"file": str(path), "probed_at": saved.get("probed_at"), "probe": record.probe},
    )


def _cache(path: Path, key: dict[str, Any], chosen: PrecisionChoice) -> PrecisionChoice:
    """Cache `chosen` at `path` and return it; where another process cached a verdict first,
    return that one, so every process after the first agrees. A cache that cannot be
    written (a read-only home) costs only the reuse."""
    text = json.dumps(
        {"key": key, "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "choice": chosen.as_dict()},
        indent=1,
    )
    replace = path.exists()  # unreadable, or a re-probe: this verdict replaces it
    try:
        write_text_atomic(path, text, overwrite=replace)
    except OutputExistsError:
        return _read_cached(path, key) or chosen
    except OSError:
        pass
    return chosen


# ---------------------------------------------------------------- training


def choose_for_training(
    requested: Precision,
    model: torch.nn.Module,
    train_cfg: TrainConfig,
    batch: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
) -> PrecisionChoice:
    """The precision a run trains in. The probe times `PROBE_TRAIN_STEPS` of the family's
    own `train_step` on a copy of the model and fresh optimizers (the run's state and RNG
    streams are left as they were)."""
    check_device(requested, device, "train.precision")

    def measure() -> dict[str, Any]:
        trial = copy.deepcopy(model)
        optimizers = trial.make_optimizers(train_cfg)

        def steps(choice: Choice) -> None:
            with autocast(choice, device):
                for _ in range(PROBE_TRAIN_STEPS):
                    trial.train_step(batch, optimizers)

        with _rng_untouched(device):
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            timings = interleaved_timings(steps, device)
        timings["cpu_seconds"] = round(time.process_time() - cpu_started, 3)
        timings["wall_seconds"] = round(time.perf_counter() - wall_started, 3)
        timings["steps_per_timing"] = PROBE_TRAIN_STEPS
        return timings

    made = decide(
        requested,
        device,
        measure,
        num_parameters=_num_parameters(model),
        cache_key=cache_key_for("train", model, len(batch[0])),
    )
    if (
        train_cfg.use_amp
        and device.type == "cuda"
        and made.choice == "fp32"
        and requested != "fp32"
    ):
        made = dataclasses.replace(made, choice="bf16", reason="train.use_amp on CUDA")
    return made


def _num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resumed_choice(
    requested: Precision, saved: dict[str, Any] | None, device: torch.device
) -> PrecisionChoice | None:
    """A resumed run keeps its recorded choice under `auto` (a run from before precision
    existed trained in fp32); an explicit fp32/bf16 wins (None: decide afresh)."""
    if requested != "auto":
        return None
    if saved is None:
        return PrecisionChoice(
            "auto", "fp32", "resumed: the run predates train.precision", str(device)
        )
    record = PrecisionChoice.from_dict(saved)
    return dataclasses.replace(record, reason=f"resumed: {record.reason}")


# ---------------------------------------------------------------- sampling

_sampling_override: Precision | None = None  # `--precision` of this process's command
# `auto`'s sampling choices, per cache key (the network's architecture, not the request's
# batch size, so a grid is the same whatever the batch): two loads of one checkpoint in a
# process (the API's and the CLI's) sample alike, and read the cache once.
_sampling_choices: dict[tuple, PrecisionChoice] = {}


@contextlib.contextmanager
def sampling_override(precision: Precision | None) -> Iterator[None]:
    """`--precision` for a whole command (sample, synth, eval, serve): every model sampled
    inside uses it instead of its checkpoint's `sample.precision`. Process-wide, not
    per-thread, so the web server's worker threads see it too."""
    global _sampling_override
    previous, _sampling_override = _sampling_override, precision
    try:
        yield
    finally:
        _sampling_override = previous


def sampling_autocast(model: torch.nn.Module, sampling: SampleConfig | None) -> torch.autocast:
    """The autocast to sample `model` in: `--precision`, else `sampling.precision`; `auto`
    probes once per architecture and process."""
    requested = _sampling_override or (sampling or SampleConfig()).precision
    return autocast(sampling_choice(model, sampling, requested).choice, model.device)


def sampling_choice(
    model: torch.nn.Module, sampling: SampleConfig | None, requested: Precision
) -> PrecisionChoice:
    """`requested` for sampling `model`, `auto` decided once per architecture and process
    (and cached per machine). Called on every `Family.sample`: without bf16 units, or
    once decided, it costs a few microseconds."""
    device = model.device
    check_device(requested, device, "sample.precision")
    if requested != "auto" or not bf16_units(device):
        return decide(requested, device, dict, num_parameters=0)
    memo = (repr(model.config), tuple(model.image_shape), str(device), torch.get_num_threads())
    if memo not in _sampling_choices:
        _sampling_choices[memo] = decide(
            "auto",
            device,
            lambda: _measure_sampling(model, sampling),
            num_parameters=_num_parameters(model),
            cache_key=cache_key_for("sample", model, PROBE_SAMPLES),
        )
    return _sampling_choices[memo]


def _measure_sampling(model: torch.nn.Module, sampling: SampleConfig | None) -> dict[str, Any]:
    """Time a small batch of `generate_from_latents` (a few diffusion steps) in each
    precision; called inside `Family.sample` (eval mode, no gradients)."""
    if sampling is not None and "num_steps" in model.sampling_fields:
        sampling = dataclasses.replace(
            sampling, num_steps=min(sampling.num_steps, PROBE_SAMPLING_STEPS)
        )
    generator = torch.Generator().manual_seed(0)
    z = model.randn(PROBE_SAMPLES, *model.latent_shape, generator=generator)
    labels = model.check_labels(PROBE_SAMPLES, None, generator)

    def draw(choice: Choice) -> None:
        with autocast(choice, model.device):
            model.generate_from_latents(z, labels=labels, generator=generator, sampling=sampling)

    with _rng_untouched(model.device):
        return interleaved_timings(draw, model.device)
