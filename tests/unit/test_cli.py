"""End-to-end CLI runs on the synthetic dataset (seconds)."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.cli import main
from tiny_runs import TINY_DCGAN


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny conditional dcgan run: (its folder, what `train` printed)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert (
            run_cli(
                "train",
                "--model",
                "dcgan",
                "--data",
                "synthetic",
                "--max-steps",
                6,
                "--out",
                out,
                "--no-progress",
                "--set",
                "model.num_classes=10",
                *TINY_DCGAN,
            )
            == 0
        )
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def trained_run(trained):
    return trained[0]


def test_train_prints_where_things_are(trained):
    run, printed = trained
    first, *rest = printed.splitlines()
    assert first.startswith("trained dcgan: 6 steps,")
    places = dict(line.strip().split(":", 1) for line in rest)
    places = {what: Path(where.strip()) for what, where in places.items()}
    assert places["run folder"] == run
    assert places["checkpoint"] == run / "final"
    assert (places["checkpoint"] / "weights.safetensors").is_file()
    assert places["sample grids"] == run / "samples" and any(places["sample grids"].glob("*.png"))
    assert places["loss curves"] == run / "loss_curves.png" and places["loss curves"].is_file()
    assert places["animation"] == run / "progress.gif"


def test_sample_grid_png(trained_run, tmp_path, capsys):
    assert run_cli("sample", trained_run, "--num-samples", 9, "--out", tmp_path / "g.png") == 0
    assert Image.open(tmp_path / "g.png").size == (2 * (3 * 30 + 2),) * 2
    assert "wrote 9 samples" in capsys.readouterr().out


def test_sample_npz_with_classes(trained_run, tmp_path):
    out = tmp_path / "s.npz"
    assert (
        run_cli(
            "sample",
            trained_run,
            "--num-samples",
            6,
            "--class",
            "disc",
            "--class",
            "9",
            "--out",
            out,
        )
        == 0
    )
    with np.load(out, allow_pickle=False) as data:
        assert data["images"].shape == (6, 1, 28, 28) and data["images"].dtype == np.uint8
        assert sorted(set(data["labels"].tolist())) == [3, 9]
        assert list(data["class_names"])[3] == "disc"


def test_sample_folder_per_class(trained_run, tmp_path):
    out = tmp_path / "pngs"
    assert (
        run_cli("sample", trained_run, "--num-samples", 20, "--per-class", "--out", f"{out}/") == 0
    )
    assert len(list(out.glob("*.png"))) == 20


def test_same_seed_same_samples(trained_run, tmp_path):
    for name in ("a", "b"):
        run_cli(
            "sample",
            trained_run,
            "--num-samples",
            4,
            "--seed",
            5,
            "--out",
            tmp_path / f"{name}.npz",
        )
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert np.array_equal(a["images"], b["images"])


def test_dry_run_prints_resolved_config(capsys):
    assert (
        run_cli("train", "--model", "dcgan", "--epochs", 3, "--dry-run", "--set", "train.lr=1e-3")
        == 0
    )
    out = capsys.readouterr().out
    assert "epochs = 3" in out and "lr = 0.001" in out and 'name = "dcgan"' in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--set", "train.nope=1", "--dry-run"], "unknown config key 'train.nope'"),
        (["train", "--model", "nope", "--dry-run"], "unknown model 'nope'"),
        (["train", "--config", "missing.toml", "--dry-run"], "config file not found"),
        (["train", "--config", "no-such-preset", "--dry-run"], "no config file or preset"),
        (["sample", "/no/such/run"], "no such checkpoint"),
        (["data", "info", "nonexistent-dataset"], "nonexistent-dataset"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, message, capsys):
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_class_on_unconditional_model(tmp_path, capsys):
    out = tmp_path / "u"
    run_cli(
        "train",
        "--data",
        "synthetic",
        "--max-steps",
        2,
        "--out",
        out,
        "--no-progress",
        "--set",
        "model.num_classes=0",
        *TINY_DCGAN,
    )
    assert run_cli("sample", out, "--class", "disc", "--out", tmp_path / "x.png") == 2
    assert "unconditional" in capsys.readouterr().err


def test_data_info_synthetic(capsys):
    assert run_cli("data", "info", "synthetic") == 0
    assert "synthetic" in capsys.readouterr().out


def test_console_script_exit_code(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fashiongen", "train", "--set", "train.epochs=0", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: train.epochs must be >= 1"


def test_interpolation_between_seeds_is_a_path(trained_run):
    import torch

    from fashiongen.checkpoint import load_model
    from fashiongen.generate import generate, interpolate

    model, _ = load_model(trained_run)
    frames = interpolate(model, seed_a=1, seed_b=2, num_frames=5, label=3)
    assert frames.shape == (5, 1, 28, 28) and frames.dtype == torch.uint8
    # The ends are the two seeds' own samples (same latent, same class).
    ends = [generate(model, 1, labels=torch.tensor([3]), seed=s)[0] for s in (1, 2)]
    assert (frames[0].int() - ends[0].int()).abs().max() <= 1
    assert (frames[-1].int() - ends[1].int()).abs().max() <= 1
    assert not torch.equal(frames[0], frames[-1])
