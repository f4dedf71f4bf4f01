"""Checkpoints: safetensors weights with the config inside, and a separate training state.

A checkpoint is a folder holding
  weights.safetensors  every tensor of the model, plus `ema.`-prefixed EMA copies of the
                       sampling networks; metadata: family, image shape, config, step,
                       and a SHA-256 of the tensors. Enough on its own to sample, evaluate
                       or serve.
                       A DDPM that keeps its own autoguidance guide (`train.keep_guide_at`)
                       holds the guide's weights too, `guide.`-prefixed.
  state.pt             optimizers, RNG states, step and epoch, for exact resumption, with a
                       SHA-256 of its contents inside; loaded with
                       `torch.load(weights_only=True)`, which runs no pickled code.
Folders are written under a temporary name, fsynced, and renamed into place
(`fashiongen.files`), so a reader never sees half a checkpoint; a process killed meanwhile
leaves only hidden `.*.tmp` entries, which `files.remove_stale_temporaries` clears.
safetensors and torch.save keep no checksums of their data, so the SHA-256s
(`fashiongen.digests`) are what turns a flipped byte into a clear error.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fashiongen.config import (
    DEFAULT_GUIDE_SCALE,
    RunConfig,
    SampleConfig,
    config_from_dict,
    config_to_dict,
)
from fashiongen.digests import state_digest, tensors_digest
from fashiongen.errors import CheckpointError, ConfigError, FashiongenError
from fashiongen.files import staged_folder
from fashiongen.models import MODELS, build_model
from fashiongen.models.base import Family
from fashiongen.version import __version__
from fashiongen.zoo import available

WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.pt"
EMA_PREFIX = "ema."
GUIDE_PREFIX = "guide."
FORMAT = "fashiongen-checkpoint/1"
STATE_CHECKSUM_KEY = "_sha256"  # inside state.pt: the digest of everything else in it


@dataclass
class Checkpoint:
    """What a checkpoint folder (or a lone weights file) holds."""

    path: Path
    config: RunConfig
    image_shape: tuple[int, int, int]
    step: int
    weights: dict[str, torch.Tensor]  # the model's state dict
    ema: dict[str, torch.Tensor]  # EMA tensors of the sampling networks, by state-dict key
    metadata: dict[str, Any]
    guide: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # its own guide's


def save_checkpoint(
    folder: str | Path,
    *,
    model: torch.nn.Module,
    config: RunConfig,
    step: int,
    ema: dict[str, torch.Tensor] | None = None,
    state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    guide: dict[str, torch.Tensor] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a checkpoint folder atomically; refuses non-finite weights, and an existing
    `folder` unless `overwrite` (which swaps the old for the new once it is complete).
    `guide`: the state dict of the model's own autoguidance guide, if it keeps one.

    The bytes of `weights.safetensors` depend only on the weights, EMA, guide, config, step
    and `extra`, so the same training run gives the same file.
    """
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for prefix, extra_tensors in ((EMA_PREFIX, ema), (GUIDE_PREFIX, guide)):
        tensors.update(
            {prefix + k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
        )
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights ({bad[0]}) to {folder}")
    metadata = {
        "format": FORMAT,
        "fashiongen_version": __version__,
        "family": config.model.name,
        "image_shape": json.dumps(list(model.image_shape)),
        "step": str(step),
        "config": json.dumps(config_to_dict(config)),
        "extra": json.dumps(extra or {}),
        "tensors_sha256": tensors_digest(tensors),
    }
    with staged_folder(folder, overwrite=overwrite) as tmp:
        (tmp / WEIGHTS_FILE).write_bytes(
            _canonical_header(save(_dedupe_shared(tensors), metadata=metadata))
        )
        if state is not None:
            torch.save({**state, STATE_CHECKSUM_KEY: state_digest(state)}, tmp / STATE_FILE)
    return folder


def _canonical_header(data: bytes) -> bytes:
    """safetensors bytes with the JSON header's keys sorted. safetensors writes its metadata
    from a Rust hash map, in an order that changes from one save to the next; the tensors'
    offsets are explicit, so sorting changes no tensor and makes equal checkpoints equal bytes.
    """
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return len(text).to_bytes(8, "little") + text + data[8 + header_len :]


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store copies."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def model_source(name_or_path: str | Path) -> Path:
    """What a command that reads a model was given: an existing path as it is, else the
    weights of the zoo model of that name (a local file or folder named like a zoo model
    wins). Anything else is a CheckpointError naming both kinds."""
    path = Path(name_or_path)
    if path.exists():
        return path
    zoo = available()
    if str(name_or_path) in zoo:
        return zoo[str(name_or_path)]
    if len(path.parts) > 1:  # a path, not a name
        raise CheckpointError(f"no such checkpoint or run folder: {path}")
    choices = ", ".join(sorted(zoo)) or "none ship with this install"
    raise CheckpointError(
        f"no such checkpoint or run folder: {path}, nor a zoo model of "
        f"that name (the zoo has: {choices})"
    )


def weights_path(path: str | Path) -> Path:
    """The weights file of a checkpoint folder, a run folder (its final or latest checkpoint),
    a weights file given directly, or a zoo model's name (`model_source`)."""
    path = model_source(path)
    if path.is_file():
        return path
    if (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    if (path / "final" / WEIGHTS_FILE).is_file():
        return path / "final" / WEIGHTS_FILE
    if (path / STATE_FILE).is_file():  # a checkpoint folder that lost its weights
        raise CheckpointError(f"checkpoint {path / WEIGHTS_FILE} is missing")
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest / WEIGHTS_FILE
    raise CheckpointError(f"no checkpoint found in {path}")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a checkpoint (family, step, config ...) without its tensors."""
    file = weights_path(path)
    try:
        with safe_open(file, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {file} is unreadable or corrupt ({_first_line(e)})"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a fashiongen checkpoint")
    return metadata


def read_step(path: str | Path) -> int:
    """The training step a checkpoint was saved at, read from its header alone."""
    metadata = read_metadata(path)
    try:
        return int(metadata["step"])
    except (KeyError, ValueError):
        raise CheckpointError(
            f"checkpoint {weights_path(path)} has no valid step in its header"
        ) from None


def load_checkpoint(path: str | Path, *, with_state: bool = False) -> tuple[Checkpoint, dict]:
    """Read a checkpoint; any corruption raises CheckpointError naming the file."""
    file = weights_path(path)
    metadata = read_metadata(file)
    try:
        tensors = load_file(file)
        config = config_from_dict(json.loads(metadata["config"]))
        image_shape = tuple(json.loads(metadata["image_shape"]))
        step = int(metadata["step"])
    except FashiongenError as e:
        raise CheckpointError(
            f"checkpoint {file} holds a config this version rejects ({e})"
        ) from None
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {file} is unreadable or corrupt ({_first_line(e)})"
        ) from None
    expected_digest = metadata.get("tensors_sha256")  # absent from checkpoints before it
    if expected_digest is not None and tensors_digest(tensors) != expected_digest:
        raise CheckpointError(
            f"checkpoint {file} is corrupt: its tensors do not match the checksum in its header"
        )
    ema, guide = ({k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
                  for p in (EMA_PREFIX, GUIDE_PREFIX))  # fmt: skip
    weights = {k: v for k, v in tensors.items() if not k.startswith((EMA_PREFIX, GUIDE_PREFIX))}
    state: dict = {}
    if with_state:
        state = load_training_state(file.parent / STATE_FILE)
    checkpoint = Checkpoint(
        file.parent,
        config,
        image_shape,
        step,
        weights,
        ema,
        {k: v for k, v in metadata.items() if k != "config"},
        guide,
    )
    return checkpoint, state


def load_training_state(file: Path) -> dict:
    """Optimizers, RNG states and counters; `weights_only=True` never runs pickled code."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state {file} is missing") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"training state {file} is unreadable or unsafe and was not "
            f"loaded ({_unpickling_problem(e)})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"training state {file} is not a table of training state")
    expected = state.pop(STATE_CHECKSUM_KEY, None)  # absent from checkpoints before it
    if expected is not None and state_digest(state) != expected:
        raise CheckpointError(
            f"training state {file} is corrupt: its contents do not match the checksum inside it"
        )
    return state


def _unpickling_problem(error: Exception) -> str:
    """The useful line of torch.load's error. Under weights_only=True it opens by suggesting
    a retry with weights_only=False, the one thing not to do with an unknown file."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Weights only load failed"):
        return lines[0] if lines else type(error).__name__
    details = []
    for line in lines[1:]:
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        elif line.startswith(("Please file an issue", "Check the documentation")):
            continue
        if line:
            details.append(line)
    return f"refused by the safe unpickler: {details[0] if details else 'unsupported content'}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_model(
    path: str | Path,
    *,
    use_ema: bool = True,
    device: str | torch.device = "cpu",
    with_guide: bool = True,
) -> tuple[Any, Checkpoint]:
    """Build the family a checkpoint (folder, weights file, run folder or zoo name) names
    and load its weights (EMA ones when present). The model keeps the checkpoint's sampling
    settings, which `fashiongen.generate` uses when given none (`own_sampling`), and, unless
    `with_guide` is off, the autoguidance guide they name (`sample.guide`, `attach_guide`).

    Returns (model in eval mode, Checkpoint).
    """
    checkpoint, _ = load_checkpoint(path)
    family = checkpoint.config.model.name
    if family not in MODELS:
        raise CheckpointError(f"checkpoint {checkpoint.path} is of unknown family {family!r}")
    try:
        model = build_model(checkpoint.config.model, checkpoint.image_shape)
    except (FashiongenError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {checkpoint.path}: cannot build a {family} of shape "
            f"{checkpoint.image_shape} from its config ({_first_line(e)})"
        ) from None
    weights = dict(checkpoint.weights)
    if use_ema:
        weights.update(checkpoint.ema)
    sampling_only = checkpoint.metadata.get("sampling_only") == "true"
    check_weights_fit(model, weights, checkpoint, sampling_only=sampling_only)
    model.load_state_dict(weights, strict=not sampling_only)
    model.checkpoint_sampling = checkpoint.config.sample
    model = model.to(device).eval()
    guide = checkpoint.config.sample.guide
    if checkpoint.guide and with_guide:
        keep_own_guide(model, checkpoint)
    elif with_guide and guide and "guide" in model.sampling_fields:
        try:
            attach_guide(model, guide)
        except FashiongenError as e:
            raise CheckpointError(
                f"checkpoint {checkpoint.path}: its guide {guide!r} ({_first_line(e)})"
            ) from None
    return model, checkpoint


def keep_own_guide(model: Family, checkpoint: Checkpoint) -> None:
    """Give `model` the guide its checkpoint holds (`train.keep_guide_at`)."""
    try:
        model.keep_guide(checkpoint.guide)
    except (AttributeError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {checkpoint.path}: its guide's weights do not fit its model "
            f"({_first_line(e)})"
        ) from None


def attach_guide(model: Family, source: str | Path) -> None:
    """Load the model `source` names (zoo name, run folder or checkpoint; EMA weights) as
    `model`'s autoguidance guide, on its device. A family that takes no guide is refused."""
    if "guide" not in model.sampling_fields:
        raise CheckpointError(
            f"a {model.config.name} model takes no guide: autoguidance is for DDPM models"
        )
    guide, _ = load_model(source, device=model.device, with_guide=False)
    model.set_guide(guide)


def sampling_with(
    model: Family,
    sampling: SampleConfig,
    changes: dict[str, Any] | None = None,
    guide: str | Path | None = None,
) -> SampleConfig:
    """`sampling` with `changes` (SampleConfig fields) applied, as `sample` and `eval` take
    them from the command line; with `guide` (zoo name, run or checkpoint), that model is
    attached as `model`'s autoguidance guide and sampled at DEFAULT_GUIDE_SCALE unless a
    scale is given or already set."""
    changes = changes or {}
    changed = dataclasses.replace(sampling, **changes)  # bad values are refused first
    unused = sorted(set(changes) - model.sampling_fields - {"precision"})
    if unused:
        what = ", ".join(f"sample.{field}" for field in unused)
        raise ConfigError(
            f"a {model.config.name} model does not use {what}: "
            + (
                f"it samples with {', '.join(sorted(model.sampling_fields))} only"
                if model.sampling_fields
                else "it samples in one fixed way"
            )
        )
    if not guide:
        return changed
    attach_guide(model, guide)
    unscaled = "guide_scale" not in changes and sampling.guide_scale == 1
    scale = DEFAULT_GUIDE_SCALE if unscaled else changed.guide_scale
    return dataclasses.replace(changed, guide=str(guide), guide_scale=scale)


def own_sampling(model: Family) -> SampleConfig | None:
    """The sampling settings of the checkpoint `model` was loaded from (`load_model`); None
    for a model built in this process (training), which samples with the library defaults."""
    return model.checkpoint_sampling


def check_weights_fit(
    model: Family,
    weights: dict[str, torch.Tensor],
    checkpoint: Checkpoint,
    *,
    sampling_only: bool = False,
) -> None:
    """Raise CheckpointError unless `weights` has exactly the model's keys and shapes
    (with `sampling_only`, those of the family's `training_only_modules` may be missing).

    A checkpoint whose config names another family or shape than its tensors (tampered,
    or from another version) is then a one-line error, not a failure deep in torch.
    """
    expected = model.state_dict()
    missing = expected.keys() - weights.keys()
    if sampling_only:
        missing = {k for k in missing if model.needed_for_sampling(k)}
    problems = [f"{k} missing" for k in missing]
    problems += [f"{k} unexpected" for k in weights.keys() - expected.keys()]
    problems += [
        f"{k} is {tuple(weights[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in expected.keys() & weights.keys()
        if expected[k].shape != weights[k].shape
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not fit a {checkpoint.config.model.name} of "
            f"shape {checkpoint.image_shape} as this version builds it ({len(problems)} "
            f"tensors differ, e.g. {sorted(problems)[0]})"
        )
