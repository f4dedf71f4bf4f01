"""Determinism on the CPU: the same config and seed give byte-identical checkpoints
(weights.safetensors), grids and samples, in one process or another."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from reliability_helpers import run_process

from fashiongen.checkpoint import WEIGHTS_FILE
from fashiongen.cli import main
from fashiongen.models import MODELS

ROOT = Path(__file__).resolve().parents[2]


def _digest_tool():
    """tools/digest_outputs.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "digest_outputs", ROOT / "tools" / "digest_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Tiny members of every family, shared with tools/digest_outputs.py (the refactoring check).
# A new family needs an entry (test_every_family_has_tiny_settings), so none is skipped.
TINY_SETTINGS = _digest_tool().TINY_SETTINGS
TEACHERS = _digest_tool().TEACHERS  # a student family: its teacher's run is trained first
COMMON = [
    "train",
    "--data",
    "synthetic",
    "--no-progress",
    "--max-steps",
    "4",
    "--set",
    "train.checkpoint_every_n_steps=2",
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
]
RUN_FILES = [
    f"final/{WEIGHTS_FILE}",
    f"checkpoints/step_0000002/{WEIGHTS_FILE}",
    "samples/epoch_0001.png",
]


def _train_args(family: str, out: str = "run") -> list[str]:
    teacher = ["--set", "model.teacher=teacher"] if family in TEACHERS else []
    return [*COMMON, "--model", family, *TINY_SETTINGS[family], *teacher, "--out", out]


def _train_in(folder: Path, family: str, monkeypatch) -> Path:
    folder.mkdir()
    monkeypatch.chdir(folder)  # the same relative out_dir, so the same config in the header
    if family in TEACHERS:
        assert main(_train_args(TEACHERS[family], out="teacher")) == 0
    assert main(_train_args(family)) == 0
    return folder / "run"


def test_every_family_has_tiny_settings():
    assert set(TINY_SETTINGS) == set(MODELS), "TINY_SETTINGS must list exactly the registry"


@pytest.mark.parametrize("family", list(MODELS))
def test_training_twice_gives_identical_files(family, tmp_path, monkeypatch):
    if family not in TINY_SETTINGS:
        pytest.fail(f"no tiny settings for {family}: add them to TINY_SETTINGS")
    a = _train_in(tmp_path / "a", family, monkeypatch)
    b = _train_in(tmp_path / "b", family, monkeypatch)
    for name in RUN_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_another_process_trains_and_samples_identically(tmp_path, monkeypatch):
    """The same in a fresh interpreter (its own hash seed); sampling a diffusion model with
    a stochastic sampler, to a PNG grid and to npz, twice in each."""
    run = _train_in(tmp_path / "a", "ddpm", monkeypatch)
    other = tmp_path / "b"
    other.mkdir()
    trained = run_process(*_train_args("ddpm"), cwd=other)
    assert trained.returncode == 0, trained.stderr
    for name in RUN_FILES:
        assert (run / name).read_bytes() == (other / "run" / name).read_bytes(), name

    sample = [
        "sample",
        str(run),
        "--num-samples",
        "6",
        "--seed",
        "7",
        "--sampler",
        "ancestral",
        "--steps",
        "3",
    ]
    outputs = {}
    for where in ("here", "there"):
        for suffix in ("png", "npz"):
            out = tmp_path / f"{where}.{suffix}"
            if where == "here":
                assert main([*sample, "--out", str(out)]) == 0
            else:
                assert run_process(*sample, "--out", out).returncode == 0
            outputs[where, suffix] = out.read_bytes()
    assert outputs["here", "png"] == outputs["there", "png"]
    assert outputs["here", "npz"] == outputs["there", "npz"]
