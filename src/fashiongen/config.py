"""Typed run configuration: nested frozen dataclasses, TOML presets, `--set` overrides.

Resolution order: dataclass defaults, then a TOML file, then `--set section.key=value`
overrides. Every value is coerced to its field's type; an unknown key or a bad value raises
`ConfigError` naming it. The resolved config is saved beside every run and inside every
checkpoint, so sampling, evaluation and the web page need nothing but a checkpoint.

The `[model]` table is family-specific: `model.name` picks the family, whose own config
dataclass (a subclass of `ModelConfig`) is its `Config` in the model registry
(`fashiongen.models.MODELS`), which hands itself to `set_model_registry`. This module is a
leaf: it imports neither the families, the samplers nor torch, so every layer may use it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from fashiongen.errors import ConfigError
from fashiongen.limits import (
    MAX_BATCH_SIZE,
    MAX_EVAL_SAMPLES,
    MAX_GUIDANCE_SCALE,
    MAX_SAMPLING_STEPS,
    MAX_TRAIN_GRID_SAMPLES,
)

# Field metadata: the field is left out of a written config (checkpoints, TOML) while it
# holds its default, so files written before it existed and files written after are the same
# bytes; reading restores the default.
WRITTEN_UNLESS_DEFAULT = types.MappingProxyType({"written_unless_default": True})


@dataclass(frozen=True)
class ModelConfig:
    """Fields every family shares; each family subclasses it with its own."""

    name: str = "dcgan"
    num_classes: int = 0  # 0 = unconditional; otherwise the labels 0..num_classes-1

    def __post_init__(self) -> None:
        require(self.num_classes >= 0, "model.num_classes must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion-mnist"  # fashion-mnist | mnist | synthetic | folder:PATH
    data_dir: str | None = None
    image_size: int | None = None  # None = the dataset's own size
    channels: int | None = None  # None = the dataset's own channels

    def __post_init__(self) -> None:
        require(
            self.image_size is None or 4 <= self.image_size <= 512,
            "data.image_size must be between 4 and 512",
        )
        require(self.channels in (None, 1, 3), "data.channels must be 1 or 3")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    max_steps: int | None = None  # stop after this many steps (overrides epochs when smaller)
    max_minutes: float | None = None  # stop once this much training time has been spent
    # What training time counts: "wall" seconds, or this process's "cpu" seconds (all threads),
    # which a busy shared machine cannot shrink: fair budgets ("10 CPU-minutes").
    clock: Literal["wall", "cpu"] = "wall"
    batch_size: int = 128
    lr: float = 2e-4
    # Learning-rate schedule over the run's steps (train.epochs, or train.max_steps when
    # smaller): a linear warm-up over `warmup_steps`, then "constant", or "cosine" down to
    # `min_lr_ratio` * lr at the last step. A time budget that ends first stops it early.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    ema_decay: float = 0.0  # 0 = no EMA of the sampling networks
    # the decay at step s is min(ema_decay, (1 + s) / (10 + s)): early in a run the average
    # covers only recent steps instead of the first, untrained weights
    use_ema_warmup: bool = False
    # Autoguidance's guide from the run itself (DDPM): at this fraction of the run's length
    # (its steps, or train.max_minutes when that ends it first) the sampling weights are
    # frozen as the guide that `sample.guide_scale` steers away from; saved in every later
    # checkpoint. 0 = none.
    keep_guide_at: float = field(default=0.0, metadata=WRITTEN_UNLESS_DEFAULT)
    checkpoint_every_n_steps: int = 500
    keep_checkpoints: int = 3
    log_every_n_steps: int = 50
    grid_every_n_epochs: int = 1
    eval_every_n_epochs: int = 0  # FID/KID/precision/recall during training; 0 = off
    eval_num_samples: int = 1000  # samples per training-time evaluation
    num_grid_samples: int = 64
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    use_amp: bool = False  # bf16 autocast on CUDA; ignored on CPU
    # bf16 autocast of the networks ("bf16"), none ("fp32"), or bf16 where the device has
    # bf16 matrix units and a probe finds it faster ("auto"): fashiongen.precision
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto", metadata=WRITTEN_UNLESS_DEFAULT
    )
    # torch.compile the family's networks in place (checkpoints unchanged); pays back where
    # benchmarks/speed_options.py says so (the DCGAN presets); needs a C++ compiler on CPU.
    compile: bool = False
    num_threads: int = 0  # 0 = all cores
    on_nonfinite: Literal["rollback", "stop"] = "rollback"
    use_tensorboard: bool = True  # when the tensorboard package is installed

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs must be >= 1")
        require(self.max_steps is None or self.max_steps >= 1, "train.max_steps must be >= 1")
        require(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes must be > 0")
        require(
            1 <= self.batch_size <= MAX_BATCH_SIZE,
            f"train.batch_size must be between 1 and {MAX_BATCH_SIZE}",
        )
        require(self.lr > 0, "train.lr must be > 0")
        require(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        require(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio must lie in [0, 1]")
        require(all(0 <= b < 1 for b in self.betas), "train.betas must lie in [0, 1)")
        require(0 <= self.ema_decay < 1, "train.ema_decay must lie in [0, 1)")
        require(0 <= self.keep_guide_at < 1, "train.keep_guide_at must lie in [0, 1)")
        require(self.checkpoint_every_n_steps >= 1, "train.checkpoint_every_n_steps must be >= 1")
        require(self.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
        require(self.log_every_n_steps >= 1, "train.log_every_n_steps must be >= 1")
        require(self.grid_every_n_epochs >= 1, "train.grid_every_n_epochs must be >= 1")
        require(self.eval_every_n_epochs >= 0, "train.eval_every_n_epochs must be >= 0")
        require(
            10 <= self.eval_num_samples <= MAX_EVAL_SAMPLES,
            f"train.eval_num_samples must be between 10 and {MAX_EVAL_SAMPLES}",
        )
        require(
            1 <= self.num_grid_samples <= MAX_TRAIN_GRID_SAMPLES,
            f"train.num_grid_samples must be in 1..{MAX_TRAIN_GRID_SAMPLES}",
        )
        require(self.num_threads >= 0, "train.num_threads must be >= 0")


# The keys of fashiongen.samplers.SAMPLERS, in its order (tests/unit/test_config.py checks).
SAMPLER_NAMES = ("ancestral", "ddim", "dpmpp_2m")


# autoguidance's weight when a guide is named without one (docs/results/autoguidance.md)
DEFAULT_GUIDE_SCALE = 2.0


@dataclass(frozen=True)
class SampleConfig:
    """How diffusion-based families sample; GANs and the VAE ignore it."""

    sampler: str = "ddim"  # see fashiongen.samplers.SAMPLERS
    num_steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 1.0  # classifier-free guidance; 1 = off
    strength: float = 0.5  # hybrid only: t0/T, how far the GAN draft is noised
    # Autoguidance (DDPM only): x0 = guide + guide_scale (x0_model - x0_guide), the guide a
    # weaker model of the same task, e.g. the run's own early checkpoint (zoo name, run
    # folder or checkpoint, attached by `load_model`); 1 = off.
    guide: str = field(default="", metadata=WRITTEN_UNLESS_DEFAULT)
    guide_scale: float = field(default=1.0, metadata=WRITTEN_UNLESS_DEFAULT)
    # the networks' precision when sampling, as train.precision (every family)
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto", metadata=WRITTEN_UNLESS_DEFAULT
    )

    def __post_init__(self) -> None:
        require(
            1 <= self.num_steps <= MAX_SAMPLING_STEPS,
            f"sample.num_steps must be between 1 and {MAX_SAMPLING_STEPS}",
        )
        require(0 <= self.eta <= 1, "sample.eta must lie in [0, 1]")
        require(
            0 <= self.guidance_scale <= MAX_GUIDANCE_SCALE,
            f"sample.guidance_scale must lie in [0, {MAX_GUIDANCE_SCALE}]",
        )
        require(0 <= self.strength <= 1, "sample.strength must lie in [0, 1]")
        require(
            0 <= self.guide_scale <= MAX_GUIDANCE_SCALE,
            f"sample.guide_scale must lie in [0, {MAX_GUIDANCE_SCALE}]",
        )
        require(
            self.sampler in SAMPLER_NAMES,
            f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLER_NAMES)}",
        )


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        require(0 <= self.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}")


MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; seed + 1 is used too


def require(ok: bool, message: str) -> None:
    """Validation helper for config __post_init__: raise ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


# ---------------------------------------------------------------- dict <-> dataclass


PRESETS_DIR = Path(__file__).parent / "configs"


def preset_path(name_or_path: str | Path) -> Path:
    """A TOML file path, or the name of a shipped preset (`dcgan-quick`)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        return path
    preset = PRESETS_DIR / f"{name_or_path}.toml"
    if not preset.exists():
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise ConfigError(f"no config file or preset named {name_or_path!r}; presets: {names}")
    return preset


class _Family(Protocol):
    Config: type[ModelConfig]


_model_registry: typing.Mapping[str, _Family] = {}


def set_model_registry(registry: typing.Mapping[str, _Family]) -> None:
    """Resolve `[model]` tables through `registry` (family name -> family class with its
    `Config`). `fashiongen.models` passes its `MODELS` when imported, so this module never
    imports the families that import it; the mapping is read live, so a family added to
    MODELS later (tests do) resolves too."""
    global _model_registry
    _model_registry = registry


def model_config_class(name: str) -> type[ModelConfig]:
    """The config dataclass of the family named `name`; ConfigError listing the choices."""
    if name not in _model_registry:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(_model_registry)}")
    return _model_registry[name].Config


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists), ready for TOML or JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("written_unless_default") and value == f.default:
            continue
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a `RunConfig` from a nested dict; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a table of sections")
    model_table = data.get("model") or {}
    if not isinstance(model_table, dict):
        raise ConfigError('[model] must be a table of settings, e.g. model.name = "dcgan"')
    model_name = model_table.get("name", ModelConfig.name)
    if not isinstance(model_name, str):
        raise ConfigError("model.name must be a string")
    section_types = {
        "model": model_config_class(model_name),
        "data": DataConfig,
        "train": TrainConfig,
        "sample": SampleConfig,
    }
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(RunConfig)
    for key, value in data.items():
        if key in section_types:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            kwargs[key] = _build(section_types[key], value, key)
        elif key in hints:
            kwargs[key] = _coerce(value, hints[key], key)
        else:
            known = ", ".join([*section_types, *(k for k in hints if k not in section_types)])
            raise ConfigError(f"unknown config key {key!r} (known: {known})")
    for key, cls in section_types.items():
        kwargs.setdefault(key, cls())
    return RunConfig(**kwargs)


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}.{key}' (known keys of [{prefix}]: "
                f"{', '.join(sorted(names))})"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**kwargs)


def _coerce_table(value: Any, cls: type, key: str) -> Any:
    """A nested table, e.g. the hybrid's [model.gan]; a ModelConfig is picked by its name."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table")
    if issubclass(cls, ModelConfig):
        name = value.get("name", cls.name)
        if not isinstance(name, str):
            raise ConfigError(f"{key}.name must be a string")
        family_cls = model_config_class(name)
        if not issubclass(family_cls, cls):
            raise ConfigError(f"{key}.name={name!r} is not allowed here")
        cls = family_cls
    return _build(cls, value, key)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a TOML or `--set` value to the field's annotated type."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return _coerce_union(value, typing.get_args(annotation), key)
    if dataclasses.is_dataclass(annotation):
        return _coerce_table(value, annotation, key)
    if origin is Literal:
        return _coerce_choice(value, typing.get_args(annotation), key)
    if origin is tuple:
        return _coerce_tuple(value, typing.get_args(annotation), key)
    if annotation in _SCALARS:
        return _SCALARS[annotation](value, key)
    raise ConfigError(f"config key {key} has an unsupported type")


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    """`X | None` takes none/null; otherwise the first member type the value fits."""
    is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
    if is_none and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"bad value for {key}: {value!r}")


def _coerce_choice(value: Any, choices: tuple[Any, ...], key: str) -> Any:
    if value not in choices:
        listed = ", ".join(repr(a) for a in choices)
        raise ConfigError(f"bad value for {key}: {value!r} (choose one of {listed})")
    return value


def _coerce_tuple(value: Any, args: tuple[Any, ...], key: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple) or len(value) != len(args):
        raise ConfigError(f"bad value for {key}: expected a list of {len(args)} numbers")
    return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))


def _coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"bad value for {key}: {value!r} (expected true or false)")


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"bad value for {key}: {value!r} (expected an integer)")


def _coerce_float(value: Any, key: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"bad value for {key}: {value!r} (expected a number)")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"bad value for {key}: {value!r} (expected a finite number)")
    return number


def _coerce_str(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"bad value for {key}: {value!r} (expected a string)")


_SCALARS: dict[type, typing.Callable[[Any, str], Any]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
}


# ---------------------------------------------------------------- TOML and overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 2e-4); TOML syntax, bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: expected key=value, e.g. train.lr=2e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"bad override key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: absurd nesting
        value = raw.strip()
    return key.split("."), value


Override = str | tuple[str, Any]  # `--set` text, or a (dotted key, value) pair built as data


def merge_overrides(data: dict[str, Any], overrides: typing.Sequence[Override]) -> dict[str, Any]:
    """Apply overrides to a nested dict (copied, not changed in place): `--set` text
    (`train.lr=2e-4`, read by `parse_override`) or pairs such as `("train.lr", 2e-4)`."""
    merged = copy.deepcopy(data)
    for override in overrides:
        if isinstance(override, str):
            path, value = parse_override(override)
        else:
            path, value = override[0].split("."), override[1]
        table = merged
        for depth, part in enumerate(path[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"unknown config key {'.'.join(path[: depth + 2])!r}")
        table[path[-1]] = value
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def resolve_config(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then `base` (e.g. CLI flags), then the TOML file, then `--set` overrides."""
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    if base:
        data = deep_merge(base, data)
    return config_from_dict(merge_overrides(data, overrides or []))


def deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """`low` with `high`'s values on top, tables merged key by key."""
    out = dict(low)
    for k, v in high.items():
        both_tables = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if both_tables else v
    return out


def to_toml(cfg: RunConfig) -> str:
    """Serialise a config as TOML: top-level scalars, then one table per (nested) section."""
    lines: list[str] = []
    _write_table(config_to_dict(cfg), [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    if path:
        lines.append(f"\n[{'.'.join(path)}]")
    # None has no TOML form; leaving the key out restores the default (None) on reading.
    lines += [
        f"{k} = {_toml_value(v)}"
        for k, v in table.items()
        if not isinstance(v, dict) and v is not None
    ]
    for k, v in table.items():
        if isinstance(v, dict):
            _write_table(v, [*path, k], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def replace(cfg: Any, **changes: Any) -> Any:
    """`dataclasses.replace` for nested configs: replace(cfg, train={"epochs": 2})."""
    updates = {}
    for key, value in changes.items():
        current = getattr(cfg, key)
        updates[key] = (
            dataclasses.replace(current, **value)
            if isinstance(value, dict) and dataclasses.is_dataclass(current)
            else value
        )
    return dataclasses.replace(cfg, **updates)
