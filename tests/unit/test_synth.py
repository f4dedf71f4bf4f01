"""`fashiongen synth` and `cas` on a tiny synthetic run: every format loads back, CAS runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen import samples, synth
from fashiongen.cli import main
from fashiongen.data import load_dataset
from fashiongen.data.synthetic import CLASS_NAMES
from fashiongen.errors import ConfigError, DataError
from fashiongen.nets.featnet import FeatNet
from tiny_runs import THREE_STEPS

NUM_SAMPLES = 30  # + 10 test images (N // 6, at least one per class)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test setting
    root = tmp_path_factory.mktemp("synth-runs")
    out = {"cond": root / "cond", "uncond": root / "uncond"}
    assert (
        main(
            [
                "train",
                "--model",
                "dcgan",
                "--out",
                str(out["cond"]),
                "--set",
                "model.num_classes=10",
                *THREE_STEPS,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--model",
                "dcgan",
                "--out",
                str(out["uncond"]),
                "--set",
                "model.num_classes=0",
                *THREE_STEPS,
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def datasets(runs, tmp_path_factory) -> dict[str, Path]:
    """The conditional run's samples in every format (same seed, so the same images)."""
    root = tmp_path_factory.mktemp("synth")
    for fmt in synth.SYNTH_FORMATS:
        synth.write_synthetic_dataset(
            runs["cond"], root / fmt, num_samples=NUM_SAMPLES, fmt=fmt, log=lambda _: None
        )
    return {fmt: root / fmt for fmt in synth.SYNTH_FORMATS}


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


BALANCED = torch.arange(NUM_SAMPLES) % 10


def test_idx_loads_with_data_dir_and_right_labels(datasets):
    folder = datasets["idx"]
    manifest = json.loads((folder / samples.MANIFEST).read_text())
    assert manifest["num_train"] == NUM_SAMPLES and manifest["num_test"] == 10
    assert manifest["labels"] == "requested" and manifest["class_names"] == list(CLASS_NAMES)
    assert sorted(manifest["files"]) == sorted(p.name for p in folder.glob("*-ubyte.gz"))
    train = load_dataset("fashion-mnist", "train", data_dir=folder)
    test = load_dataset("fashion-mnist", "test", data_dir=folder)
    assert train.images.shape == (NUM_SAMPLES, 1, 28, 28) and len(test) == 10
    assert torch.equal(train.labels, BALANCED)


def test_npz_and_png_hold_the_same_labelled_images(datasets):
    idx = samples.load_synthetic(datasets["idx"])
    npz = samples.read_samples(datasets["npz"] / "train.npz")
    assert torch.equal(npz.images, idx.images) and torch.equal(npz.labels, BALANCED)
    assert npz.class_names == list(CLASS_NAMES)
    folder = load_dataset(f"folder:{datasets['png']}", "train")
    assert folder.class_names == [samples.class_slug(i, list(CLASS_NAMES)) for i in range(10)]
    # the folder loader orders by class, then file name
    order = torch.from_numpy(np.argsort(BALANCED.numpy(), kind="stable"))
    assert torch.equal(folder.labels, BALANCED[order])
    assert torch.equal(folder.images, idx.images[order])
    assert len(load_dataset(f"folder:{datasets['png']}", "test")) == 10
    for fmt in synth.SYNTH_FORMATS:  # one reader for all three
        assert torch.equal(
            samples.load_synthetic(datasets[fmt]).labels.sort().values, BALANCED.sort().values
        )


def test_unconditional_model_is_labelled_by_the_featnet(runs, tmp_path):
    torch.manual_seed(0)
    net = FeatNet(10).eval()
    net.class_names = list(CLASS_NAMES)
    manifest = synth.write_synthetic_dataset(
        runs["uncond"], tmp_path / "u", num_samples=12, fmt="npz", featnet=net, log=lambda _: None
    )
    assert manifest["labels"] == "featnet" and "feature net" in manifest["notes"][0]
    data = samples.read_samples(tmp_path / "u" / "train.npz")
    assert torch.equal(data.labels, net.logits(data.images).argmax(1))


def test_cas_returns_two_accuracies(datasets):
    lines: list[str] = []
    result = synth.classification_accuracy_score(datasets["idx"], epochs=1, log=lines.append)
    assert 0 <= result["cas"] <= 1 and 0 <= result["real_accuracy"] <= 1
    assert result["num_synthetic"] == result["num_real_train"] == NUM_SAMPLES
    assert result["num_test"] == 160 and result["dataset"] == "synthetic"
    assert "CAS" in synth.format_cas(result) and len(lines) == 4  # 2 x (header + 1 epoch)


def test_synth_and_cas_cli(runs, tmp_path, capsys):
    out = tmp_path / "s"
    assert (
        main(
            [
                "synth",
                str(runs["cond"]),
                "--num-samples",
                "20",
                "--out",
                str(out),
                "--format",
                "png",
            ]
        )
        == 0
    )
    assert f"--data folder:{out}" in capsys.readouterr().out
    report = tmp_path / "cas.json"
    assert main(["cas", str(out), "--epochs", "1", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "ratio CAS / real" in printed
    assert set(json.loads(report.read_text())) >= {"cas", "real_accuracy", "ratio"}


def test_bad_inputs_are_one_line_errors(runs, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    for argv, message in (
        (
            ["synth", str(runs["cond"]), "--num-samples", "5", "--out", str(tmp_path / "full")],
            "not empty",
        ),
        (
            ["synth", str(tmp_path / "nope"), "--num-samples", "5", "--out", str(tmp_path / "o")],
            "no such checkpoint",
        ),
        (
            ["synth", str(runs["uncond"]), "--num-samples", "5", "--out", str(tmp_path / "o")],
            "no feature network",
        ),
        (["cas", str(tmp_path / "empty")], "holds no synthetic dataset"),
        (["cas", str(tmp_path / "nope")], "no such synthetic dataset"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o").exists()


def test_library_rejects_bad_formats_and_counts(runs, tmp_path):
    with pytest.raises(ConfigError, match="unknown format"):
        synth.write_synthetic_dataset(runs["cond"], tmp_path / "a", num_samples=4, fmt="jpg")
    with pytest.raises(ConfigError, match="at least 1"):
        synth.write_synthetic_dataset(runs["cond"], tmp_path / "a", num_samples=0)
    with pytest.raises(DataError, match="no such sample"):
        samples.read_samples(tmp_path / "missing.npz")
