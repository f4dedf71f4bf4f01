"""Hashes of everything a fixed-seed run writes, to show a refactor keeps behaviour byte-identical.

Drives only the CLI (the stable surface), so the same script runs against any commit:

    PYTHONPATH=OLD/src python tools/digest_outputs.py old.json
    python tools/digest_outputs.py new.json
    python tools/digest_outputs.py --compare old.json new.json

Every family, conditional and unconditional, is trained a few steps on the synthetic
dataset with one thread; the final and intermediate weights and training states (their
tensors: a state also holds wall-clock seconds), the grids and figures, `sample` to PNG and
npz and a `synth` dataset are hashed. Determinism holds on one machine (CPU kernels differ
across processors), so compare digests made on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Tiny members of every family (tests/reliability/test_determinism.py uses them too).
TINY_SETTINGS = {
    "gan": ["--set", "model.g_width=16", "--set", "model.d_width=16"],
    "dcgan": ["--set", "model.g_width=8", "--set", "model.d_width=8"],
    "vae": ["--set", "model.width=8"],
    "ddpm": ["--set", "model.base_width=8", "--set", "sample.num_steps=3"],
    "hybrid": [
        "--set",
        "model.gan.g_width=8",
        "--set",
        "model.gan.d_width=8",
        "--set",
        "model.refiner.base_width=8",
        "--set",
        "sample.num_steps=3",
    ],
    # a 1-call student of the tiny ddpm run trained before it (TEACHERS)
    "distilled": [
        "--set",
        "model.base_width=8",
        "--set",
        "model.steps=1",
        "--set",
        "model.teacher_steps=3",
        "--set",
        "model.num_classes=10",  # as the ddpm preset's
    ],
}
# Families trained from another family's run: the teacher's family, trained first.
TEACHERS = {"distilled": "ddpm"}
COMMON = [
    "--data",
    "synthetic",
    "--no-progress",
    "--max-steps",
    "6",
    "--set",
    "train.checkpoint_every_n_steps=3",
    "--set",
    "train.ema_decay=0.9",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.num_grid_samples=16",
    "--set",
    "train.use_tensorboard=false",
    "--set",
    "train.num_threads=1",
    "--set",
    "train.compile=false",
]
SKIP_SUFFIXES = (".log", ".lock", ".json", ".toml", ".csv", ".txt", ".gif", ".html", ".md")


def _cli(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "fashiongen", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"fashiongen {' '.join(args)} failed:\n{done.stderr}")


def _tensors(value: object, path: str = "") -> list[tuple[str, bytes]]:
    """Every tensor in a training state with where it sits: the state also holds wall-clock
    seconds, which differ from run to run."""
    import torch

    if isinstance(value, torch.Tensor):
        return [(path, value.contiguous().numpy().tobytes())]
    if isinstance(value, dict):
        return [t for k in sorted(value, key=str) for t in _tensors(value[k], f"{path}/{k}")]
    if isinstance(value, (list, tuple)):
        return [t for i, v in enumerate(value) for t in _tensors(v, f"{path}/{i}")]
    return []


def _hash_file(path: Path) -> str:
    if path.suffix != ".pt":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = hashlib.sha256()
    for _, data in _tensors(state):
        tensors.update(data)
    return tensors.hexdigest()


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _hash_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(SKIP_SUFFIXES) and "tensorboard" not in p.parts
    }


def digest() -> dict[str, str]:
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for family, tiny in TINY_SETTINGS.items():
            for num_classes in (10, 0):
                name = f"{family}-{num_classes}"
                prefixes = ["model.gan.", "model.refiner."] if family == "hybrid" else ["model."]
                classes = [a for p in prefixes for a in ("--set", f"{p}num_classes={num_classes}")]
                if family in TEACHERS:
                    classes += ["--set", f"model.teacher={TEACHERS[family]}-{num_classes}"]
                _cli("train", "--model", family, *COMMON, *tiny, *classes, "--out", name, cwd=work)
                run = work / name
                for suffix in ("png", "npz"):
                    _cli(
                        "sample",
                        name,
                        "--num-samples",
                        "10",
                        "--seed",
                        "3",
                        "--out",
                        f"{name}-s.{suffix}",
                        cwd=work,
                    )
                    hashes[f"{name}/sample.{suffix}"] = hashlib.sha256(
                        (work / f"{name}-s.{suffix}").read_bytes()
                    ).hexdigest()
                hashes.update({f"{name}/{k}": v for k, v in _hash_tree(run).items()})
        _cli("synth", "ddpm-10", "--num-samples", "20", "--seed", "1", "--out", "synth", cwd=work)
        hashes.update({f"synth/{k}": v for k, v in _hash_tree(work / "synth").items()})
    return hashes


def compare(old_path: str, new_path: str) -> int:
    old, new = (json.loads(Path(p).read_text()) for p in (old_path, new_path))
    differ = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    missing, added = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
    for label, keys in (("differ", differ), ("missing", missing), ("added", added)):
        for key in keys:
            print(f"{label}: {key}")
    same = len(old.keys() & new.keys()) - len(differ)
    print(
        f"{same} files identical, {len(differ)} differ, {len(missing)} missing, {len(added)} added"
    )
    return 1 if differ or missing else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        raise SystemExit(compare(sys.argv[2], sys.argv[3]))
    Path(sys.argv[1]).write_text(json.dumps(digest(), indent=1, sort_keys=True) + "\n")
