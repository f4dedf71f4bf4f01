"""The pretrained model zoo shipped inside the package.

Each entry is one safetensors file holding a trained model's sampling weights (EMA ones
folded in, stored as float16 to keep the package small) with its config, plus a line in
`manifest.json`: the preset, the exact command, the commit, where and how long it trained,
and its measured metrics. `fashiongen sample --model NAME` draws from it offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from fashiongen.checkpoint import load_checkpoint, load_model
from fashiongen.digests import tensors_digest
from fashiongen.errors import ConfigError
from fashiongen.files import atomic_path, write_text_atomic
from fashiongen.models import MODELS

ZOO_DIR = Path(__file__).parent
MANIFEST = ZOO_DIR / "manifest.json"
CHECK_NUM_SAMPLES = 500  # samples behind each model's recorded `fid_check`


def manifest() -> dict[str, dict[str, Any]]:
    """name -> what is known about that model (empty when nothing ships)."""
    return _read(MANIFEST)


def available() -> dict[str, Path]:
    """name -> weights file of every shipped model."""
    return {name: ZOO_DIR / entry["file"] for name, entry in manifest().items()
            if (ZOO_DIR / entry["file"]).is_file()}


def zoo_path(name: str) -> Path:
    """The weights of zoo model `name`; an unknown name lists the choices."""
    models = available()
    if name not in models:
        choices = ", ".join(sorted(models)) or "none ship with this install"
        raise ConfigError(f"no zoo model named {name!r}; choose one of: {choices}")
    return models[name]


def export(run: str | Path, name: str, info: dict[str, Any], zoo_dir: Path = ZOO_DIR) -> Path:
    """Fold a run's EMA weights into its model, store them as float16, and record `info`
    (preset, command, commit, training minutes, metrics ...) in the manifest."""
    checkpoint, _ = load_checkpoint(run)
    weights = {**checkpoint.weights, **checkpoint.ema}
    family = MODELS[checkpoint.config.model.name]
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous()
               for k, v in weights.items() if family.needed_for_sampling(k)}
    with safe_open(checkpoint.path / "weights.safetensors", "pt") as f:
        metadata = dict(f.metadata())
    metadata["sampling_only"] = "true"
    metadata["tensors_sha256"] = tensors_digest(tensors)  # of the float16 tensors stored here
    path = zoo_dir / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    entries = _read(zoo_dir / "manifest.json")
    entries[name] = {"file": path.name, "family": checkpoint.config.model.name,
                     "num_classes": checkpoint.config.model.num_classes,
                     "step": checkpoint.step, **info}
    write_text_atomic(zoo_dir / "manifest.json", json.dumps(entries, indent=2) + "\n")
    return path


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_manifest(entries: dict[str, dict[str, Any]]) -> None:
    write_text_atomic(MANIFEST, json.dumps(entries, indent=2) + "\n")


def check_fid(name: str, num_samples: int = CHECK_NUM_SAMPLES, seed: int = 0) -> float:
    """FID of zoo model `name` on balanced samples (the number its manifest records, so a
    broken install or a changed sampler shows up as a different value)."""
    # Late: scoring pulls in sampling and the metrics, and the checkpoint module reads the zoo.
    from fashiongen.evaluation import draw_and_score

    model, checkpoint = load_model(zoo_path(name))
    scores, _ = draw_and_score(model, num_samples, sampling=checkpoint.config.sample, seed=seed,
                               use_memorisation=False)
    return float(scores["fid"])


def total_bytes() -> int:
    return sum(p.stat().st_size for p in available().values())
