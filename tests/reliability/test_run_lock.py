"""One writer per run folder: the run lock (`fashiongen.files.RunLock`, an flock on
RUN/.fashiongen.lock) against real processes.

A `python -m fashiongen train` process trains a tiny run for as long as the test needs; every
other command that would write into that run is refused with one line naming its PID, and
touches nothing; once the trainer is SIGKILLed the kernel has dropped its lock, so the run
resumes at once. Under torchrun, rank 0 holds the lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import (
    SUBPROCESS_TIMEOUT_S,
    TRAIN,
    child_env,
    run_process,
    wait_for_lock_holder,
)

import fashiongen.checkpoint as ckpt
import fashiongen.files as files
from fashiongen.checkpoint import list_checkpoints, load_checkpoint
from fashiongen.files import lock_holder

LONG = ["--max-steps", "1000000", "--set", "train.checkpoint_every_n_steps=3"]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _start_training(
    run: Path, *, launcher: tuple[str, ...] = (sys.executable, "-m", "fashiongen")
) -> subprocess.Popen:
    return subprocess.Popen(
        [*launcher, *TRAIN, *LONG, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started."""
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=SUBPROCESS_TIMEOUT_S)


@pytest.fixture
def training(tmp_path):
    """(run folder, the process training it, holding its lock, with a checkpoint on disk)."""
    run = tmp_path / "run"
    process = _start_training(run)
    try:
        wait_for_lock_holder(run, process)
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while not list_checkpoints(run):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        yield run, process
    finally:
        if process.poll() is None:
            _stop(process)


@pytest.mark.slow
def test_a_second_train_process_is_refused_naming_the_first(training):
    run, process = training
    second = run_process(*TRAIN, "--max-steps", "2", "--out", run)
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("\n") == 1 and second.stderr.startswith("error: ")
    assert f"is being written by another fashiongen process (PID {process.pid})" in second.stderr
    assert process.poll() is None, "the first one trains on"


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        lambda run, a: [*TRAIN, "--resume", "--out", run],
        lambda run, a: [*TRAIN, "--overwrite", "--max-steps", "2", "--out", run],
        lambda run, a: ["visualize", run],  # the run's own pictures
        lambda run, a: ["combine", a.run, a.ddpm, "--out", run, "--overwrite"],
        lambda run, a: ["sample", a.run, "--num-samples", "4", "--out", f"{run}/", "--overwrite"],
    ],
    ids=[
        "train --resume",
        "train --overwrite",
        "visualize",
        "combine --overwrite",
        "sample --overwrite",
    ],
)
def test_writing_into_a_run_being_trained_is_refused_and_touches_nothing(
    training, argv, artefacts, cli, monkeypatch
):
    """`train --resume` used to clear the running job's half-written checkpoint as a stale
    temporary (and crash it); now nothing is removed, renamed or replaced."""
    run, process = training
    touched = []
    for module, name in (
        (files, "remove_stale_temporaries"),
        (files, "remove_tree"),
        (files, "move_into_place"),
        (files, "remove_folder"),
    ):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: touched.append(_name))
    line = cli(*argv(run, artefacts)).one_error_line()
    assert f"{run} is being written by another fashiongen process (PID {process.pid})" in line
    assert touched == []
    assert process.poll() is None, "the trainer trains on"


@pytest.mark.slow
def test_a_killed_trainer_leaves_no_stale_lock(training, cli):
    run, process = training
    _stop(process)
    assert lock_holder(run) is None, "the kernel released the flock"
    for folder in list_checkpoints(run):
        load_checkpoint(folder, with_state=True)
    step = ckpt.read_step(list_checkpoints(run)[-1])
    result = cli(*TRAIN, "--resume", "--out", run, "--max-steps", str(step + 2))
    assert result.code == 0, result.err
    assert load_checkpoint(run / "final")[0].step == step + 2


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
def test_under_torchrun_rank_0_holds_the_lock(tmp_path, cli):
    run = tmp_path / "run"
    process = _start_training(
        run, launcher=(str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "fashiongen")
    )
    try:
        deadline = time.monotonic() + 2 * SUBPROCESS_TIMEOUT_S
        while (holder := lock_holder(run)) is None:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no rank took the run lock"
            time.sleep(0.05)
        environ = Path(f"/proc/{holder}/environ").read_bytes().split(b"\0")
        assert b"RANK=0" in environ and b"WORLD_SIZE=2" in environ
        line = cli(*TRAIN, "--max-steps", "2", "--out", run).one_error_line()
        assert f"(PID {holder})" in line
    finally:
        _stop(process)
    assert lock_holder(run) is None
