"""Helpers of the reliability suite: tiny CLI runs, exit codes, damaged files.

Every test here drives `fashiongen.cli.main` (in-process, fast) or `python -m fashiongen`
(a real process, for exit codes and SIGKILL) on the synthetic dataset, with bounded time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fashiongen.cli import main
from tiny_runs import TINY_DCGAN, sets

# A DCGAN that trains a step in milliseconds; one thread, so runs are reproducible.
TINY = [*TINY_DCGAN, *sets("train.num_threads=1")]
TRAIN = ["train", "--data", "synthetic", "--model", "dcgan", "--no-progress", *TINY]
SUBPROCESS_TIMEOUT_S = 120


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def one_error_line(self) -> str:
        """The single `error: ...` line on stderr (asserting there is exactly one)."""
        assert self.code == 2, (self.code, self.err)
        assert self.err.endswith("\n") and self.err.count("\n") == 1, self.err
        assert self.err.startswith("error: "), self.err
        assert "Traceback" not in self.err
        return self.err.strip()


def run_cli(capsys, *args: str | Path) -> CliResult:
    """`fashiongen ARGS` in-process: exit code, stdout, stderr (argparse's exits included)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def run_process(
    *args: str | Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = SUBPROCESS_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """`python -m fashiongen ARGS` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "fashiongen", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or child_env(),
        cwd=cwd,
        timeout=timeout,
    )


def child_env(**changes: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}
    env.update(changes)
    return env


def train_run(out: Path, *extra: str | Path) -> Path:
    """A tiny synthetic training run, in-process; returns its run folder."""
    assert main([*TRAIN, "--out", str(out), *map(str, extra)]) == 0
    return out


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def hidden_temporaries(root: Path) -> list[Path]:
    """Everything a writer leaves while it works: hidden `.*.tmp` files and folders."""
    return sorted(p for p in root.rglob(".*") if p.name.endswith(".tmp"))


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Everything under `root`, hidden entries included: relative path -> bytes (None for a
    folder), to assert that a refused or killed command left a folder exactly as it was."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def visible(root: Path) -> list[str]:
    """The names in `root` a user sees (hidden entries left out)."""
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def wait_for_lock_holder(
    run: Path, process: subprocess.Popen, timeout: float = SUBPROCESS_TIMEOUT_S
) -> int:
    """Wait until `process` holds the run lock of `run`; its PID, as the lock file names it."""
    import time

    from fashiongen.files import LOCK_FILE, lock_holder

    deadline = time.monotonic() + timeout
    while lock_holder(run) != process.pid:
        assert process.poll() is None, f"exited with {process.returncode} before locking"
        assert time.monotonic() < deadline, "the process never took the run lock"
        time.sleep(0.02)
    assert (run / LOCK_FILE).read_text().strip() == str(process.pid)
    return process.pid


def damage(path: Path, how: str) -> None:
    """Damage a file: truncate, empty, garbage, or flip one byte in its second half."""
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "flip":
        pos = len(data) * 3 // 4
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x5A]) + data[pos + 1 :])
    elif how == "delete":
        path.unlink()
    else:
        raise ValueError(how)
