"""Fixtures of the reliability suite; the helpers live in reliability_helpers.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from reliability_helpers import TINY, CliResult, run_cli, train_run

from fashiongen.cli import main


@pytest.fixture
def cli(capsys):
    """`cli(*args)` runs `fashiongen ARGS` in-process and returns a CliResult."""

    def run(*args) -> CliResult:
        return run_cli(capsys, *args)

    return run


@dataclass(frozen=True)
class Artefacts:
    """What the writing commands read, made once per session (tests never change them)."""

    run: Path  # a conditional DCGAN run
    ddpm: Path  # a conditional DDPM run, the refiner for `combine`
    synth: Path  # a synthetic dataset of `run`, for `cas`
    cache: Path  # XDG_CACHE_HOME holding a feature network of the synthetic dataset
    picture: Path  # a small grey PNG with a garment-like blob, the input of `edit`


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Artefacts:
    from fashiongen.data.synthetic import CLASS_NAMES
    from fashiongen.nets.featnet import FeatNet, featnet_file_name, save_featnet

    torch.set_num_threads(1)  # session fixtures run before conftest's per-test setting
    root = tmp_path_factory.mktemp("artefacts")
    run = train_run(root / "dcgan", "--max-steps", "2", "--set", "model.num_classes=10")
    ddpm = root / "ddpm"
    assert (
        main(
            [
                "train",
                "--model",
                "ddpm",
                "--data",
                "synthetic",
                "--no-progress",
                "--max-steps",
                "2",
                "--out",
                str(ddpm),
                *TINY[:2],
                "--set",
                "model.base_width=8",
                "--set",
                "model.num_classes=10",
                "--set",
                "sample.num_steps=2",
                "--set",
                "train.batch_size=32",
                "--set",
                "train.num_grid_samples=10",
                "--set",
                "train.use_tensorboard=false",
                "--set",
                "train.num_threads=1",
            ]
        )
        == 0
    )
    cache = root / "cache"
    torch.manual_seed(0)
    net = FeatNet(len(CLASS_NAMES)).eval()
    save_featnet(
        cache / "fashiongen" / "featnets" / featnet_file_name("synthetic"),
        net,
        {"dataset": "synthetic", "class_names": list(CLASS_NAMES)},
    )
    synth = root / "synthetic"
    assert (
        main(["synth", str(run), "--num-samples", "20", "--format", "npz", "--out", str(synth)])
        == 0
    )
    picture = root / "picture.png"
    blob = Image.new("L", (40, 56))
    ImageDraw.Draw(blob).rectangle((8, 6, 31, 49), fill=200)
    blob.save(picture)
    return Artefacts(run, ddpm, synth, cache, picture)


@pytest.fixture
def featnet_cache(artefacts, monkeypatch):
    """Commands in this process find the synthetic dataset's feature network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(artefacts.cache))
    return artefacts.cache
