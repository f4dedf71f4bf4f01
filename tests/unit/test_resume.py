"""`train --resume` is honest (issue 17): safe changes are applied, unsafe ones refused in one
line, the summary names the run's family and why it stopped, `--dry-run` shows the run's
config; under a budget the progress bar counts budget time."""

from __future__ import annotations

import sys

import pytest

from fashiongen.cli import main
from fashiongen.config import read_toml

TINY = [
    "--data",
    "synthetic",
    "--no-progress",
    "--set",
    "model.base_width=8",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.num_grid_samples=16",
    "--set",
    "train.use_tensorboard=false",
    "--set",
    "sample.num_steps=2",
]


@pytest.fixture
def ddpm_run(tmp_path, capsys):
    run = tmp_path / "ddpm"
    assert main(["train", "--model", "ddpm", "--max-steps", "2", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    return run


def test_resume_applies_safe_changes_and_names_the_runs_family(ddpm_run, capsys):
    assert (
        main(
            [
                "train",
                "--resume",
                "--out",
                str(ddpm_run),
                "--max-steps",
                "4",
                "--set",
                "train.lr=0.0005",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained ddpm: 4 steps" in out and "stopped at train.max_steps=4" in out
    saved = read_toml(ddpm_run / "config.toml")
    assert saved["train"]["lr"] == 0.0005 and saved["model"]["name"] == "ddpm"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (["--seed", "3"], "seed"),
        (["--model", "dcgan"], "model.name"),
        (["--set", "model.base_width=16"], "model.base_width"),
        (["--data", "mnist"], "data.name"),
    ],
)
def test_resume_refuses_unsafe_changes_in_one_line(ddpm_run, change, key, capsys):
    before = sorted(p.name for p in ddpm_run.rglob("*"))
    assert main(["train", "--resume", "--out", str(ddpm_run), *change]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume cannot change {key} ") and err.count("\n") == 1
    assert sorted(p.name for p in ddpm_run.rglob("*")) == before


def test_resume_dry_run_prints_the_runs_config_with_the_changes(ddpm_run, capsys):
    assert main(["train", "--resume", "--out", str(ddpm_run), "--epochs", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'name = "ddpm"' in out and "epochs = 7" in out and "max_steps = 2" in out
    assert "base_width = 8" in out


def test_resume_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "none"), "--dry-run"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_a_budget_bar_counts_budget_seconds_and_the_summary_says_budget(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars show on a terminal only
    args = [
        "train",
        "--model",
        "ddpm",
        "--epochs",
        "1000",
        "--budget-minutes",
        "0.01",
        "--out",
        str(tmp_path / "b"),
        *[a for a in TINY if a != "--no-progress"],
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "stopped at the budget of train.max_minutes=0.01 (wall time)" in captured.out
    assert "s wall" in captured.err and "/0.6 [" in captured.err  # the total is the budget
    assert "/1000" not in captured.err  # not the steps of 1000 epochs


@pytest.mark.parametrize("on_a_terminal", [True, False])
def test_long_commands_show_a_bar_on_a_terminal_only(tmp_path, capsys, monkeypatch, on_a_terminal):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: on_a_terminal)
    assert (
        main(["sample", "--model", "gan", "--num-samples", "300", "--out", str(tmp_path / "s.npz")])
        == 0
    )
    assert ("sampling: " in capsys.readouterr().err) == on_a_terminal
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "vae",
                "--max-steps",
                "2",
                "--out",
                str(run),
                "--data",
                "synthetic",
                "--set",
                "train.batch_size=32",
                "--set",
                "train.num_grid_samples=16",
                "--set",
                "train.use_tensorboard=false",
            ]
        )
        == 0
    )
    assert ("vae: " in capsys.readouterr().err) == on_a_terminal
