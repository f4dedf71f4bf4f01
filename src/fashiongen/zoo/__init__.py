"""The pretrained model zoo shipped inside the package.

Each entry is one safetensors file holding a trained model's sampling weights (EMA ones
folded in, stored as float16 to keep the package small) with its config, plus a line in
`manifest.json`: the preset, the exact command, the commit, where and how long it trained,
and its measured metrics. `fashiongen sample --model NAME` draws from it offline.

This module is the catalogue: it reads the manifest and finds files, and imports nothing
of fashiongen but its errors, so `checkpoint` can resolve a zoo name. Writing the zoo
(`export`, `write_manifest`) and checking it (`check_fid`) are in `fashiongen.zoo.release`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fashiongen.errors import ConfigError

ZOO_DIR = Path(__file__).parent
MANIFEST = ZOO_DIR / "manifest.json"


def manifest() -> dict[str, dict[str, Any]]:
    """name -> what is known about that model (empty when nothing ships)."""
    return read_manifest(MANIFEST)


def available() -> dict[str, Path]:
    """name -> weights file of every shipped model."""
    return {
        name: ZOO_DIR / entry["file"]
        for name, entry in manifest().items()
        if (ZOO_DIR / entry["file"]).is_file()
    }


def zoo_path(name: str) -> Path:
    """The weights of zoo model `name`; an unknown name lists the choices."""
    models = available()
    if name not in models:
        choices = ", ".join(sorted(models)) or "none ship with this install"
        raise ConfigError(f"no zoo model named {name!r}; choose one of: {choices}")
    return models[name]


def shipped_entry(path: str | Path) -> tuple[str, dict[str, Any]] | None:
    """The name and manifest entry of the shipped zoo file at `path`, or None for any other."""
    path = Path(path).resolve()
    for name, entry in manifest().items():
        if (ZOO_DIR / entry["file"]).resolve() == path and path.is_file():
            return name, entry
    return None


def fast_version(name: str) -> str | None:
    """The shipped distilled student of zoo model `name` (its manifest says `fast_version_of`),
    or None."""
    shipped = available()
    for student, entry in manifest().items():
        if entry.get("fast_version_of") == name and student in shipped:
            return student
    return None


def read_manifest(path: Path) -> dict[str, Any]:
    """The entries of a manifest file; empty when there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def total_bytes() -> int:
    return sum(p.stat().st_size for p in available().values())
