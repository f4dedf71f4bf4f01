"""Checkpoints: safetensors weights with the config inside, and a separate training state.

A checkpoint is a folder holding
  weights.safetensors  every tensor of the model, plus `ema.`-prefixed EMA copies of the
                       sampling networks; metadata: family, image shape, config, step.
                       Enough on its own to sample, evaluate or serve.
  state.pt             optimizers, RNG states, step and epoch, for exact resumption; loaded
                       with `torch.load(weights_only=True)`, which runs no pickled code.
Folders are written under a temporary name, fsynced, and renamed into place, so a reader
never sees half a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fashiongen import __version__
from fashiongen.config import RunConfig, config_from_dict, config_to_dict
from fashiongen.errors import CheckpointError, FashiongenError

WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.pt"
EMA_PREFIX = "ema."


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def save_checkpoint(folder: str | Path, *, model: torch.nn.Module, config: RunConfig,
                    step: int, ema: dict[str, torch.Tensor] | None = None,
                    state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
                    ) -> Path:
    """Write a checkpoint folder atomically; refuses non-finite weights."""
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({EMA_PREFIX + k: v.detach().cpu().contiguous() for k, v in (ema or {}).items()})
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights ({bad[0]}) to {folder}")
    metadata = {
        "format": "fashiongen-checkpoint/1",
        "fashiongen_version": __version__,
        "family": config.model.name,
        "image_shape": json.dumps(list(model.image_shape)),
        "step": str(step),
        "config": json.dumps(config_to_dict(config)),
        "extra": json.dumps(extra or {}),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        save_file(_dedupe_shared(tensors), tmp / WEIGHTS_FILE, metadata=metadata)
        _fsync_file(tmp / WEIGHTS_FILE)
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
            _fsync_file(tmp / STATE_FILE)
        _fsync_dir(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store copies."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def weights_path(path: str | Path) -> Path:
    """The weights file of a checkpoint folder, a run folder (its final or latest checkpoint),
    or a weights file given directly."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    if (path / "final" / WEIGHTS_FILE).is_file():
        return path / "final" / WEIGHTS_FILE
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest / WEIGHTS_FILE
    if not path.exists():
        raise CheckpointError(f"no such checkpoint or run folder: {path}")
    raise CheckpointError(f"no checkpoint found in {path}")


def load_checkpoint(path: str | Path, *, with_state: bool = False) -> tuple[Checkpoint, dict]:
    """Read a checkpoint; any corruption raises CheckpointError naming the file."""
    file = weights_path(path)
    try:
        tensors = load_file(file)
        with open(file, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            metadata = json.loads(f.read(header_len)).get("__metadata__") or {}
        if metadata.get("format") != "fashiongen-checkpoint/1":
            raise CheckpointError(f"{file} is not a fashiongen checkpoint")
        config = config_from_dict(json.loads(metadata["config"]))
        image_shape = tuple(json.loads(metadata["image_shape"]))
        step = int(metadata["step"])
    except FashiongenError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {file} is unreadable or corrupt ({e})") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    state: dict = {}
    if with_state:
        state = load_training_state(file.parent / STATE_FILE)
    checkpoint = Checkpoint(file.parent, config, image_shape, step, weights, ema,
                            {k: v for k, v in metadata.items() if k != "config"})
    return checkpoint, state


def load_training_state(file: Path) -> dict:
    """Optimizers, RNG states and counters; `weights_only=True` never runs pickled code."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state {file} is missing") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"training state {file} is unreadable or unsafe ({first_line})"
                              ) from None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_model(path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"):
    """Build the family a checkpoint names and load its weights (EMA ones when present).

    Returns (model in eval mode, Checkpoint).
    """
    from fashiongen.models import MODELS, build_model

    checkpoint, _ = load_checkpoint(path)
    family = checkpoint.config.model.name
    if family not in MODELS:
        raise CheckpointError(f"checkpoint {checkpoint.path} is of unknown family {family!r}")
    model = build_model(checkpoint.config.model, checkpoint.image_shape)
    weights = dict(checkpoint.weights)
    if use_ema:
        weights.update(checkpoint.ema)
    expected = model.state_dict()
    problems = [f"{k} missing" for k in expected.keys() - weights.keys()]
    problems += [f"{k} unexpected" for k in weights.keys() - expected.keys()]
    problems += [f"{k} is {tuple(weights[k].shape)}, expected {tuple(expected[k].shape)}"
                 for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape]
    if problems:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not fit a {family} of shape "
            f"{checkpoint.image_shape} as this version builds it ({len(problems)} tensors "
            f"differ, e.g. {sorted(problems)[0]})")
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval(), checkpoint
