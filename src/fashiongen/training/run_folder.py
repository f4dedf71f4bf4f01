"""The folder a run writes into, and who may write it. One process writes a run folder at a
time: it holds the folder's lock (`fashiongen.files.RunLock`, an flock on
`.fashiongen.lock`, rank 0 under torchrun) from start to end. `train --overwrite` of a taken
folder trains in a hidden staging folder beside it, swapped into place once the run is
complete and removed if it is not, so the old content survives an interrupted run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from fashiongen import checkpoint as ckpt
from fashiongen import distributed, files
from fashiongen.errors import (
    CheckpointError,
    FashiongenError,
    OutputExistsError,
    TrainingInterruptedError,
)


class _Locks:
    """Rank 0's side of opening a run folder: the locks it takes, released at the end."""

    def __init__(self, target: Path, staging: Path, *, resume: bool, overwrite: bool) -> None:
        self.target = target
        self.staging = staging
        self.resume = resume
        self.overwrite = overwrite
        self.held: list[files.RunLock] = []

    def open(self) -> Path:
        """The folder to write: `target`, or the staging folder (emptied) to overwrite it."""
        target = self.target
        if self.resume:
            if not target.is_dir():
                raise CheckpointError(f"nothing to resume: {target} does not exist")
            # Refused, naming its PID, while another process writes the run; a folder that
            # is no run stays as it was.
            self.held.append(files.RunLock(target, keep_file=False).acquire())
            return target
        if _is_free(target) or (target / files.LOCK_FILE).exists():
            self.held.append(files.RunLock(target).acquire())
            if _is_free(target):
                return target
        if not self.overwrite:
            raise _taken(target)
        # One `train --overwrite` of `target` at a time; it clears what a killed one left.
        self.held.append(files.RunLock(self.staging).acquire())
        for leftover in self.staging.iterdir():
            if leftover.name != files.LOCK_FILE:
                files.remove_tree(leftover)
        return self.staging

    def release(self) -> None:
        for lock in reversed(self.held):
            lock.release()


@contextlib.contextmanager
def run_folder(
    target: Path, ctx: distributed.DistContext, *, resume: bool, overwrite: bool
) -> Iterator[Path]:
    """The folder a run writes into, locked by rank 0 until training ends: `target` itself,
    or with `overwrite` of a taken `target` a hidden staging folder beside it, swapped with
    `target` once the run is complete (and removed if it is not). A run `target` stays
    locked meanwhile, so nothing else writes it either."""
    staging = target.with_name(f".{target.name}.overwrite{files.TEMP_SUFFIX}")
    locks = _Locks(target, staging, resume=resume, overwrite=overwrite)
    run_dir = None
    try:
        run_dir = ctx.run_on_main(locks.open)
        yield run_dir
        if run_dir == staging:
            ctx.run_on_main(lambda: files.move_into_place(staging, target, overwrite=True))
    except BaseException as error:
        if run_dir == staging:
            if ctx.is_main:
                files.remove_tree(staging)
            if isinstance(error, TrainingInterruptedError):
                raise TrainingInterruptedError(
                    f"interrupted before the new run was complete: {target} keeps its "
                    "previous content; run the command again to start afresh"
                ) from None
        raise
    finally:
        locks.release()


def _is_free(folder: Path) -> bool:
    """Missing, or an empty folder (but for its lock file)."""
    if not os.path.lexists(folder):
        return True
    return (
        folder.is_dir()
        and not folder.is_symlink()
        and {p.name for p in folder.iterdir()} <= {files.LOCK_FILE}
    )


def _taken(folder: Path) -> FashiongenError:
    if (
        ckpt.list_checkpoints(folder)
        or (folder / "final").exists()
        or (folder / files.LOCK_FILE).exists()
    ):
        return OutputExistsError(
            f"run folder {folder} already holds a run: pass --resume to "
            "continue it, --overwrite to replace it once the new run is "
            "complete, or choose another --out"
        )
    what = "and is not empty" if folder.is_dir() else "(a file)"
    return OutputExistsError(
        f"{folder} already exists {what}, and is not a run: pass "
        "--overwrite to replace it once the new run is complete, or "
        "choose another --out"
    )
