"""Every command that writes, one row each: an existing output is refused unless --overwrite,
which replaces it whole; a SIGKILL at a random moment leaves the previous content or the whole
new output; two invocations on one target never mix.

`WRITERS` is the table; `test_the_table_covers_every_writing_command` fails when the CLI's
parser gains a command that writes (one taking an `--out` or `--json` path, or
`--overwrite`) without a row here. The concurrency test lets a second invocation run to
completion while the first is about to rename its output into place (a hook on
`fashiongen.files.move_into_place`), so the race is exercised deterministically; the
run-folder lock has its own tests with real processes in test_run_lock.py.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import (
    SUBPROCESS_TIMEOUT_S,
    TRAIN,
    child_env,
    hidden_temporaries,
    snapshot,
    visible,
)

import fashiongen.files as files
from fashiongen.checkpoint import load_model
from fashiongen.cli import build_parser
from fashiongen.files import RunLock
from fashiongen.nets.featnet import load_featnet_file

KILL_SEED = 20240613
MAX_KILL_DELAY_S = 0.3  # after the command's temporary output appears


@dataclass(frozen=True)
class Writer:
    """One writing command: `argv(artefacts, out)` writes `out`; `check(out)` asserts that
    `out` holds its complete output."""

    command: str  # the subcommand as the parser names it
    argv: Callable[..., list[str]]
    target: str  # the output's name inside the test's folder
    check: Callable[[Path], None]
    is_folder: bool
    refused_on_race: bool = True  # False: the last complete write wins (one atomic rename)


def _grid(out: Path) -> None:
    assert Image.open(out).size == (2 * (4 * 30 + 2),) * 2  # 16 tiles, 4 x 4


def _npz(out: Path) -> None:
    with np.load(out) as data:
        assert data["images"].shape == (16, 1, 28, 28)


def _pngs(out: Path) -> None:
    assert len(list(out.glob("*.png"))) == 16 and visible(out) == sorted(visible(out))


def _run(out: Path) -> None:
    assert (out / "final" / "weights.safetensors").is_file() and (out / "summary.json").is_file()


def _json_with(key: str) -> Callable[[Path], None]:
    def check(out: Path) -> None:
        assert key in json.loads(out.read_text())

    return check


def _hybrid(out: Path) -> None:
    assert load_model(out)[1].config.model.name == "hybrid"


def _onnx(out: Path) -> None:
    assert len(list(out.glob("generator-*.onnx"))) == 1, visible(out)


def _has(*names: str) -> Callable[[Path], None]:
    def check(out: Path) -> None:
        assert all((out / name).is_file() for name in names), visible(out)

    return check


WRITERS: dict[str, Writer] = {
    w.command + (f" ({w.target})" if w.command == "sample" else ""): w
    for w in [
        Writer(
            "train",
            lambda a, out: [*TRAIN, "--max-steps", "2", "--out", out],
            "run",
            _run,
            is_folder=True,
        ),
        Writer(
            "sample",
            lambda a, out: ["sample", a.run, "--num-samples", "16", "--out", out],
            "g.png",
            _grid,
            is_folder=False,
        ),
        Writer(
            "sample",
            lambda a, out: ["sample", a.run, "--num-samples", "16", "--out", out],
            "s.npz",
            _npz,
            is_folder=False,
        ),
        Writer(
            "sample",
            lambda a, out: ["sample", a.run, "--num-samples", "16", "--out", f"{out}/"],
            "pngs",
            _pngs,
            is_folder=True,
        ),
        Writer(
            "featnet train",
            lambda a, out: [
                "featnet",
                "train",
                "--dataset",
                "synthetic",
                "--epochs",
                "1",
                "--out",
                out,
            ],
            "f.safetensors",
            lambda out: load_featnet_file(out),
            is_folder=False,
            refused_on_race=False,
        ),
        Writer(
            "distill",
            lambda a, out: [
                "distill",
                a.ddpm,
                "--steps",
                "1",
                "--max-steps",
                "2",
                "--set",
                "train.batch_size=8",
                "--set",
                "train.num_grid_samples=4",
                "--set",
                "train.use_tensorboard=false",
                "--no-progress",
                "--out",
                out,
            ],
            "student",
            _run,
            is_folder=True,
        ),
        Writer(
            "combine",
            lambda a, out: ["combine", a.run, a.ddpm, "--out", out],
            "hybrid",
            _hybrid,
            is_folder=True,
        ),
        Writer(
            "export", lambda a, out: ["export", a.run, "--out", out], "onnx", _onnx, is_folder=True
        ),
        Writer(
            "visualize",
            lambda a, out: ["visualize", a.run, "--out", out],
            "pictures",
            _has("interpolation.png"),
            is_folder=True,
        ),
        Writer(
            "eval",
            lambda a, out: ["eval", a.run, "--num-samples", "20", "--json", out],
            "eval.json",
            _json_with("fid"),
            is_folder=False,
        ),
        Writer(
            "compare",
            lambda a, out: ["compare", a.run, "--num-samples", "20", "--out", out],
            "report",
            _has("report.html", "report.md", "report.json"),
            is_folder=True,
        ),
        Writer(
            "synth",
            lambda a, out: ["synth", a.run, "--num-samples", "20", "--format", "npz", "--out", out],
            "synthetic",
            _has("synth.json", "train.npz", "test.npz"),
            is_folder=True,
        ),
        Writer(
            "edit",
            lambda a, out: [
                "edit",
                a.picture,
                "--model",
                a.ddpm,
                "--variations",
                "16",
                "--out",
                out,
            ],
            "e.npz",
            _npz,
            is_folder=False,
        ),
        Writer(
            "cas",
            lambda a, out: ["cas", a.synth, "--epochs", "1", "--json", out],
            "cas.json",
            _json_with("cas"),
            is_folder=False,
        ),
    ]
}
# Commands that write nothing a user names, and why.
NOT_WRITING = {
    "data info": "reads; a download goes to the checksummed cache, written atomically",
    "zoo": "lists the shipped models",
    "serve": "its downloads go to a private temporary folder of its own",
}


def _argv(writer: Writer, artefacts, out: Path, *extra: str) -> list[str]:
    return [str(a) for a in writer.argv(artefacts, out)] + list(extra)


def _previous(out: Path, *, as_folder: bool) -> dict[str, bytes | None]:
    """Put a user's content at `out` (a folder with a file in it, or a file); its snapshot."""
    if as_folder:
        out.mkdir()
        (out / "notes.txt").write_text("my notes\n")
    else:
        out.write_text("my notes\n")
    return snapshot(out.parent)


# ---------------------------------------------------------------- the table covers the CLI


def _subcommands(parser) -> dict[str, object]:
    """Every leaf subcommand of the parser: 'train', 'featnet train', ... -> its parser."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subcommands(sub)
                found.update({f"{name} {k}": v for k, v in nested.items()} or {name: sub})
    return found


def test_the_table_covers_every_writing_command():
    commands = _subcommands(build_parser())
    writing = {
        name
        for name, sub in commands.items()  # takes a path to write, or --overwrite
        if "--overwrite" in sub._option_string_actions
        or any(
            sub._option_string_actions[o].nargs != 0
            for o in ("--out", "--json")
            if o in sub._option_string_actions
        )
    }
    assert writing == {w.command for w in WRITERS.values()}
    assert set(commands) == writing | set(NOT_WRITING), "classify every subcommand"
    for name in writing:  # every writing command can be told to replace its output
        assert "--overwrite" in commands[name]._option_string_actions, name


# ---------------------------------------------------------------- (a) refuse, (b) replace


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_an_existing_output_is_refused(name, as_folder, artefacts, featnet_cache, tmp_path, cli):
    writer = WRITERS[name]
    out = tmp_path / writer.target
    before = _previous(out, as_folder=as_folder)
    result = cli(*_argv(writer, artefacts, out))
    line = result.one_error_line()
    assert f"{out} already exists" in line and "--overwrite" in line, line
    assert snapshot(tmp_path) == before, "left exactly as it was"


@pytest.mark.parametrize("name", list(WRITERS))
def test_overwrite_replaces_it_whole(name, artefacts, featnet_cache, tmp_path, cli):
    writer = WRITERS[name]
    out = tmp_path / writer.target
    _previous(out, as_folder=writer.is_folder)
    result = cli(*_argv(writer, artefacts, out, "--overwrite"))
    assert result.code == 0, result.err
    writer.check(out)
    assert not (out / "notes.txt").exists()
    assert visible(tmp_path) == [writer.target] and hidden_temporaries(tmp_path) == []


# ---------------------------------------------------------------- (c) SIGKILL at random


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WRITERS))
def test_sigkill_leaves_the_previous_content_or_the_whole_new_one(name, artefacts, tmp_path):
    """A real process replacing a user's output (--overwrite) is killed a random moment after
    its hidden temporary appears (or wherever it is when it ends first): the target is then
    exactly the previous content, or the complete new output; nothing else is visible."""
    writer = WRITERS[name]
    out = tmp_path / "work" / writer.target
    out.parent.mkdir()
    before = _previous(out, as_folder=writer.is_folder)
    rng = random.Random(f"{KILL_SEED}/{name}")
    process = subprocess.Popen(
        [sys.executable, "-m", "fashiongen", *_argv(writer, artefacts, out, "--overwrite")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(XDG_CACHE_HOME=str(artefacts.cache)),
    )
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    try:
        while process.poll() is None and not hidden_temporaries(out.parent):
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, MAX_KILL_DELAY_S))
    finally:
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert process.returncode in (0, -signal.SIGKILL), err
    assert visible(out.parent) == [writer.target]  # killed writers leave hidden `.*.tmp` only
    replaced = _target_only(snapshot(out.parent), writer.target) != _target_only(
        before, writer.target
    )
    if replaced:
        writer.check(out)  # the new output, whole
        assert not (out / "notes.txt").exists()
    print(
        f"{name}: exit {process.returncode}, {'new' if replaced else 'previous'} content, "
        f"temporaries left: {[p.name for p in hidden_temporaries(out.parent)]}"
    )


def _target_only(entries: dict[str, bytes | None], target: str) -> dict[str, bytes | None]:
    return {k: v for k, v in entries.items() if k == target or k.startswith(f"{target}/")}


# ---------------------------------------------------------------- (d) two at once


# run folders (train, distill) are locked while written instead: the lock test below
@pytest.mark.parametrize("name", [n for n in WRITERS if n not in ("train", "distill")])
def test_a_second_writer_finishing_first_is_never_clobbered(
    name, artefacts, featnet_cache, tmp_path, cli, monkeypatch
):
    """B runs from start to end while A is about to move its output into place: A is refused
    (its output is new, not a replacement), B's output stays, whole. For `featnet train`,
    whose file the feature-network code writes, the last complete file wins instead."""
    writer = WRITERS[name]
    out = tmp_path / writer.target
    argv = _argv(writer, artefacts, out)
    real_move = files.move_into_place
    second = {}

    def race(tmp, dest, **kwargs):
        if Path(dest) == out and not second:
            second["result"] = None  # B's own move goes straight through
            second["result"] = cli(*argv)
        return real_move(tmp, dest, **kwargs)

    monkeypatch.setattr(files, "move_into_place", race)
    first = cli(*argv)
    assert second["result"].code == 0, second["result"].err
    if writer.refused_on_race:
        assert "appeared while this command worked" in first.one_error_line()
    else:
        assert first.code == 0, first.err
    writer.check(out)
    assert visible(tmp_path) == [writer.target] and hidden_temporaries(tmp_path) == []


def test_a_second_train_is_refused_naming_the_lock_holder(artefacts, tmp_path, cli):
    """The run-folder row of (d): while a process holds the run's lock (here this one), a
    train into it is refused with the holder's PID; real processes: test_run_lock.py."""
    import os

    out = tmp_path / "run"
    with RunLock(out):
        line = cli(*_argv(WRITERS["train"], artefacts, out)).one_error_line()
        assert visible(out) == []
    assert f"PID {os.getpid()}" in line and str(out) in line, line
