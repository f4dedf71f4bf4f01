"""Crash safety: training killed at random moments resumes from its last checkpoint, and a
damaged checkpoint is skipped, with a one-line warning naming the file, for an older one.

The SIGKILL test starts real `python -m fashiongen train` processes on the synthetic data,
checkpointing every `INTERVAL` steps, so most kills land in or near a checkpoint write.
"""

from __future__ import annotations

import csv
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import TRAIN, child_env, copy_run, damage, hidden_temporaries, train_run
from safetensors.torch import load_file

from fashiongen.checkpoint import STATE_FILE, WEIGHTS_FILE, list_checkpoints, load_checkpoint
from fashiongen.config import config_from_dict, read_toml, replace
from fashiongen.errors import CheckpointError
from fashiongen.training import train
from fashiongen.training.state import checkpoint_step as _checkpoint_step
from fashiongen.training.state import open_for_resume as _open_for_resume

INTERVAL = 3  # checkpoint every 3 steps
NUM_KILLS = 5
KILL_SEED = 20240611
MAX_DELAY_S = 1.0  # a kill lands up to this long after the process has saved a checkpoint
PROGRESS_TIMEOUT_S = 90
EXTRA_STEPS = 2 * INTERVAL  # trained after the last kill, to complete the run
RESUMED = re.compile(r"resuming from (\S+) \(step (\d+)\)")
CRASH_ARGS = [
    "--epochs",
    "1000",
    "--set",
    f"train.checkpoint_every_n_steps={INTERVAL}",
    "--set",
    "train.log_every_n_steps=1",
    "--set",
    "train.keep_checkpoints=2",
    "--set",
    "train.ema_decay=0.9",
    "--set",
    "train.grid_every_n_epochs=1000",
]
LONG = 1_000_000  # steps: the killed processes never finish by themselves


def _start(run: Path, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "fashiongen", *TRAIN, *CRASH_ARGS, "--out", str(run), *extra],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=child_env(),
        )


def _checkpoint_steps(run: Path) -> list[int]:
    folders = list_checkpoints(run) + ([run / "final"] if (run / "final").is_dir() else [])
    return sorted(_checkpoint_step(f) for f in folders)


def _last_logged_step(run: Path) -> int:
    with open(run / "metrics.csv", newline="") as f:
        return max(int(r["step"]) for r in csv.DictReader(f) if (r.get("step") or "").isdigit())


def _assert_every_checkpoint_loads(run: Path) -> None:
    folders = list_checkpoints(run) + ([run / "final"] if (run / "final").is_dir() else [])
    for folder in folders:
        load_checkpoint(folder, with_state=True)  # raises CheckpointError if unreadable


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    rng = random.Random(KILL_SEED)
    run = tmp_path / "run"
    report = []
    for kill in range(NUM_KILLS):
        before = _checkpoint_steps(run)[-1] if kill else None
        log = tmp_path / f"life{kill}.err"
        process = _start(run, log, "--max-steps", str(LONG), *(["--resume"] if kill else []))
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        try:  # wait for a checkpoint newer than the one resumed from, then kill at random
            while not (
                run.is_dir()
                and _checkpoint_steps(run)
                and (before is None or _checkpoint_steps(run)[-1] > before)
            ):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0, MAX_DELAY_S))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert process.returncode == -signal.SIGKILL
        if before is not None:
            resumed = RESUMED.search(log.read_text())
            assert resumed and int(resumed.group(2)) == before, log.read_text()
        _assert_every_checkpoint_loads(run)
        latest = _checkpoint_steps(run)[-1]
        logged = _last_logged_step(run)
        assert logged - latest <= INTERVAL, f"lost {logged - latest} steps"
        report.append((logged, latest, [p.name for p in hidden_temporaries(run)]))

    latest = _checkpoint_steps(run)[-1]
    target = latest + EXTRA_STEPS
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fashiongen",
            *TRAIN,
            *CRASH_ARGS,
            "--out",
            str(run),
            "--resume",
            "--max-steps",
            str(target),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"(step {latest})" in done.stderr
    assert load_checkpoint(run / "final")[0].step == target
    assert hidden_temporaries(run) == [], "a resumed run clears what killed writers left"
    print("kills (last logged step, latest checkpoint, temporaries left):", report)

    # Killed five times or not, the weights are those of one uninterrupted run.
    cfg = replace(
        config_from_dict(read_toml(run / "config.toml")),
        out_dir=str(tmp_path / "reference"),
        train={"max_steps": target},
    )
    reference = train(cfg, progress=False)
    a = load_file(run / "final" / WEIGHTS_FILE)
    b = load_file(reference.final_checkpoint / WEIGHTS_FILE)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- damaged checkpoints

FILES = {"weights": WEIGHTS_FILE, "state": STATE_FILE}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run with checkpoints at steps 4 and 8 and final/ at step 12."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return train_run(
        out,
        "--max-steps",
        "12",
        "--set",
        "train.checkpoint_every_n_steps=4",
        "--set",
        "train.ema_decay=0.9",
    )


@pytest.fixture
def killed_run(finished_run, tmp_path) -> Path:
    """The same run as if killed before it wrote final/: step_4 and step_8 only."""
    import shutil

    run = copy_run(finished_run, tmp_path / "killed")
    shutil.rmtree(run / "final")
    return run


@pytest.mark.parametrize("how", ["truncate", "empty", "garbage", "flip", "delete"])
@pytest.mark.parametrize("file", list(FILES))
def test_damaged_final_falls_back_to_newest_step(finished_run, tmp_path, capsys, how, file):
    run = copy_run(finished_run, tmp_path / "run")
    damage(run / "final" / FILES[file], how)
    folder, saved, _ = _open_for_resume(run)
    assert folder.name == "step_0000008" and saved.step == 8
    warning = capsys.readouterr().err
    assert warning.startswith("warning: ") and warning.count("\n") == 1
    assert str(run / "final" / FILES[file]) in warning


@pytest.mark.parametrize("how", ["truncate", "garbage", "flip"])
@pytest.mark.parametrize("file", list(FILES))
def test_damaged_newest_step_falls_back_to_older(killed_run, capsys, how, file):
    damage(killed_run / "checkpoints" / "step_0000008" / FILES[file], how)
    folder, saved, _ = _open_for_resume(killed_run)
    assert folder.name == "step_0000004" and saved.step == 4
    assert str(killed_run / "checkpoints" / "step_0000008" / FILES[file]) in capsys.readouterr().err


def test_resume_through_the_cli_after_damage(killed_run, cli):
    damage(killed_run / "checkpoints" / "step_0000008" / WEIGHTS_FILE, "truncate")
    result = cli(*TRAIN, "--resume", "--out", killed_run, "--max-steps", "12")
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert lines[0].startswith("warning: checkpoint ") and "step_0000008" in lines[0]
    assert "resuming from" in lines[1] and "step_0000004 (step 4)" in lines[1]
    assert load_checkpoint(killed_run / "final")[0].step == 12


def test_nothing_readable_is_one_error_line(killed_run, cli):
    for folder in list_checkpoints(killed_run):
        damage(folder / WEIGHTS_FILE, "garbage")
    result = cli(*TRAIN, "--resume", "--out", killed_run, "--max-steps", "12")
    error = result.err.splitlines()[-1]
    assert result.code == 2 and error.startswith("error: no readable checkpoint in ")
    assert "weights.safetensors is unreadable or corrupt" in error
    assert "Traceback" not in result.err


@pytest.mark.parametrize("how", ["truncate", "garbage", "flip", "empty"])
def test_sampling_a_damaged_checkpoint_names_the_file(finished_run, tmp_path, cli, how):
    run = copy_run(finished_run, tmp_path / "run")
    damage(run / "final" / WEIGHTS_FILE, how)
    result = cli("sample", run, "--num-samples", 4, "--out", tmp_path / "g.png")
    assert str(run / "final" / WEIGHTS_FILE) in result.one_error_line()
    assert not (tmp_path / "g.png").exists()


def test_resume_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """Rows a killed run logged after its last checkpoint are replaced, never duplicated."""
    import shutil

    run = train_run(
        tmp_path / "run",
        "--max-steps",
        "10",
        "--set",
        "train.checkpoint_every_n_steps=4",
        "--set",
        "train.log_every_n_steps=1",
    )
    shutil.rmtree(run / "final")  # as if killed at step 10, after its row, before final/
    with open(run / "metrics.csv", "a") as f:
        f.write("11,0.55,0.1")  # and a row half-written by the kill
    train_run(run, "--resume", "--max-steps", "10")
    with open(run / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 11))


def test_plain_resume_keeps_the_runs_length(killed_run, cli):
    """`train --resume --out RUN`, as the Ctrl-C message says, ends where the run would have
    (step 12), not after the default number of epochs."""
    result = cli("train", "--resume", "--out", killed_run, "--no-progress")
    assert result.code == 0, result.err
    assert load_checkpoint(killed_run / "final")[0].step == 12


def test_stale_temporaries_are_ignored_then_cleared(killed_run):
    """What a writer killed mid-checkpoint leaves: a hidden folder with half the files."""
    half = killed_run / "checkpoints" / ".step_0000012.abc123.tmp"
    half.mkdir()
    (half / WEIGHTS_FILE).write_bytes(b"half")
    removing = killed_run / "checkpoints" / ".step_0000004.removed.tmp"
    (killed_run / "checkpoints" / "step_0000004").rename(removing)
    folder, _, _ = _open_for_resume(killed_run)
    assert folder.name == "step_0000008"
    assert hidden_temporaries(killed_run) == []


def test_checkpoint_listing_ignores_odd_names(killed_run):
    (killed_run / "checkpoints" / "step_notanumber").mkdir()
    folder, _, _ = _open_for_resume(killed_run)
    assert folder.name == "step_0000008"
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _open_for_resume(killed_run.parent / "never-trained")
