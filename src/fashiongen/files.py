"""Writing outputs without losing anything: refuse, stage, rename into place; one writer per run.

Every file or folder a command writes goes through here. `check_free` refuses an output path
that already holds something (a file, a link, a non-empty folder) unless `overwrite` is given.
`atomic_path` and `staged_folder` yield a hidden temporary beside the output (`.NAME.*.tmp`)
and `move_into_place` renames it onto the output only once it is complete and fsynced, so a
reader (or a process killed meanwhile) sees the previous content or the whole new one, never
a mix: a new output is renamed with RENAME_NOREPLACE, so an output that appeared while the
command worked is refused, not clobbered; an old one is swapped with the new atomically
(Linux `renameat2(RENAME_EXCHANGE)`, then the old is deleted), so it stays until the new is
complete; `remove_folder` deletes by renaming away first, and `remove_stale_temporaries`
clears what a killed writer left. `RunLock` is the advisory lock (`flock`) of a run folder:
one process writes into a run at a time, and the kernel drops the lock when its holder dies,
so a SIGKILL never leaves a stale lock. `cache_root` is the one user cache folder and
`safe_name` the one way a name (a dataset, a run) becomes part of a file name.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fashiongen.errors import OutputExistsError, RunBusyError

TEMP_SUFFIX = ".tmp"  # every temporary written here is a hidden `.NAME....tmp` entry
LOCK_FILE = ".fashiongen.lock"  # in every run folder; holds the PID of the process writing it
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):  # not Linux, or a C library without it
    _renameat2 = None


# ---------------------------------------------------------------- refusing what exists


def check_free(path: str | Path, *, overwrite: bool, folder: bool = False) -> None:
    """Refuse an output path that holds something, unless `overwrite`; an empty folder is
    free for a folder output. With `overwrite`, a run folder another process writes is
    still refused.

    Raises:
        OutputExistsError: the path is taken and `overwrite` is False.
        RunBusyError: the path is a run folder whose lock another process holds.
    """
    path = Path(path)
    if not os.path.lexists(path) or (folder and _is_empty_folder(path)):
        return
    if not overwrite:
        what = (
            " and holds a training run"
            if (path / LOCK_FILE).exists()
            else " and is not empty"
            if path.is_dir()
            else ""
        )
        raise OutputExistsError(
            f"{path} already exists{what}: pass --overwrite to replace it, or choose another path"
        )
    holder = lock_holder(path)
    if holder is not None:
        raise _busy(path, holder)


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


# ---------------------------------------------------------------- staging and renaming


def move_into_place(tmp: str | Path, dest: str | Path, *, overwrite: bool) -> None:
    """Rename the complete temporary `tmp` (file or folder) onto `dest` atomically.

    A missing `dest` (or an empty folder, for a folder) is simply replaced. An existing one
    is refused without `overwrite` (it appeared while the command worked); with it, files
    replace files in one rename and anything involving a folder is swapped in one
    RENAME_EXCHANGE, after which the old content, now at `tmp`, is deleted. A run folder is
    replaced only while holding its lock.
    """
    tmp, dest = Path(tmp), Path(dest)
    if not os.path.lexists(dest) or (tmp.is_dir() and _is_empty_folder(dest)):
        try:
            _rename_new(tmp, dest)
        except FileExistsError:
            raise _exists(dest) from None
    elif not overwrite:
        raise _exists(dest)
    elif tmp.is_dir() or (dest.is_dir() and not dest.is_symlink()):
        with locked_if_run(dest):
            _exchange(tmp, dest)
            remove_tree(tmp)
    else:
        os.replace(tmp, dest)
    fsync_dir(dest.parent)


def _exists(dest: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{dest} appeared while this command worked (another process "
        "wrote it): kept as it is; pass --overwrite to replace it"
    )


def _rename_new(src: Path, dest: Path) -> None:
    """Rename `src` onto a missing `dest` (or an empty folder); FileExistsError if `dest`
    holds something by then."""
    if src.is_dir() and _is_empty_folder(dest):
        try:
            os.rename(src, dest)  # replaces an empty folder, refuses one that filled meanwhile
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(e.errno, e.strerror, str(dest)) from None
            raise
        return
    if _rename2(src, dest, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dest):  # no RENAME_NOREPLACE here: check, then rename
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest))
    os.rename(src, dest)


def _exchange(a: Path, b: Path) -> None:
    """Swap `a` and `b` atomically; where the file system cannot, `b` is moved aside first
    (a process killed between the two renames leaves it at a hidden `.b.old.tmp`)."""
    if _rename2(a, b, _RENAME_EXCHANGE):
        return
    aside = b.with_name(f".{b.name}.old{TEMP_SUFFIX}")
    remove_tree(aside)
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _rename2(src: Path, dest: Path, flags: int) -> bool:
    """`renameat2(src, dest, flags)`; False where the system or file system lacks it."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dest), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), str(dest))
    raise OSError(code, os.strerror(code), str(dest))


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success fsync it and move it onto `path`
    (`move_into_place`; without `overwrite` an existing `path` is refused first).

    On failure the temporary file goes, and so do the folders this call created for it.
    """
    path = Path(path)
    if not overwrite:
        check_free(path, overwrite=False)
    created = missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except BaseException:
        remove_empty_folders(created)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        move_into_place(tmp_path, path, overwrite=overwrite)
    except BaseException:
        remove_tree(tmp_path)
        remove_empty_folders(created)
        raise


@contextlib.contextmanager
def staged_folder(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside `path` to write an output folder into; on success
    its files are fsynced and it is moved onto `path` whole (`move_into_place`).

    `check_free` runs first, so a taken `path` is refused before any work. On failure the
    temporary folder goes, and so do the folders this call created for it.
    """
    path = Path(path)
    check_free(path, overwrite=overwrite, folder=True)
    created = missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    except BaseException:
        remove_empty_folders(created)
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders
        fsync_tree(tmp)
        move_into_place(tmp, path, overwrite=overwrite)
    except BaseException:
        remove_tree(tmp)
        remove_empty_folders(created)
        raise


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def missing_folders(folder: str | Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    folder = Path(folder).absolute()
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) as far as they are empty: undoes `mkdir(parents=True)`
    after a failed write."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_tree(path: str | Path) -> None:
    """Delete a file, link or folder tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_folder(folder: str | Path) -> None:
    """Delete a folder (a checkpoint): renamed away first (atomic), so a process killed
    while deleting leaves a hidden temporary, never a half-deleted folder."""
    folder = Path(folder)
    doomed = folder.with_name(f".{folder.name}.removed{TEMP_SUFFIX}")
    shutil.rmtree(doomed, ignore_errors=True)
    try:
        os.replace(folder, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the hidden `.*.tmp` files and folders that writers killed mid-write left in
    `directory` (not recursive). Only for folders no other process is writing to."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [
        p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)
    ]
    for path in stale:
        remove_tree(path)
    return stale


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, so that renaming it publishes whole files."""
    for root, _, names in os.walk(folder):
        for name in names:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


# ---------------------------------------------------------------- names and places


def cache_root() -> Path:
    """The user cache folder: `$XDG_CACHE_HOME/fashiongen`, else `~/.cache/fashiongen`.

    A relative XDG_CACHE_HOME is ignored, as the XDG Base Directory specification says
    ("all paths set in these environment variables must be absolute ... If an
    implementation encounters a relative path ... it should consider the path invalid").
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "fashiongen"


_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, *, fallback: str) -> str:
    """`name` as one portable file-name component: outer slashes dropped, each run of
    characters other than letters, digits, `.`, `_` and `-` made one `_` (`folder:a/b` ->
    `folder_a_b`); `fallback` when nothing is left."""
    return _UNSAFE_RUN.sub("_", str(name).strip("/")) or fallback


# ---------------------------------------------------------------- one writer per run folder


class RunLock:
    """The lock of a run folder: `flock` on RUN/.fashiongen.lock, which records the holder's
    PID. Advisory: every fashiongen command that writes into a run takes it; the kernel
    releases it when the holder exits or is killed, so it is never stale.

    The lock file stays in a run folder; it is removed again when this lock created it and
    the folder holds nothing else (a run that failed before writing anything leaves
    nothing), or always with `keep_file=False` (for a folder that must stay as it was).
    """

    _held: dict[Path, RunLock] = {}  # folders this process holds, so it never refuses itself

    def __init__(self, folder: str | Path, *, keep_file: bool = True) -> None:
        self.folder = Path(folder)
        self.keep_file = keep_file
        self.fd: int | None = None
        self.created_file = False
        self.created: list[Path] = []

    def acquire(self) -> RunLock:
        """Take the lock (creating the folder if needed).

        Raises:
            RunBusyError: another process holds it; the message names its PID.
        """
        self.created = missing_folders(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.fd, self.created_file = _lock_file(self.folder)
        except BaseException:
            remove_empty_folders(self.created)
            raise
        data = f"{os.getpid()}\n".encode()
        os.pwrite(self.fd, data, 0)  # in place, so a reader never finds the file empty
        os.ftruncate(self.fd, len(data))
        RunLock._held[self.folder.absolute()] = self
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        RunLock._held.pop(self.folder.absolute(), None)
        path = self.folder / LOCK_FILE
        with contextlib.suppress(OSError):
            alone = [p.name for p in self.folder.iterdir()] == [LOCK_FILE]
            # The same inode: a folder swapped in meanwhile keeps its own lock file.
            if (
                self.created_file
                and (alone or not self.keep_file)
                and os.path.samestat(os.fstat(self.fd), os.stat(path))
            ):
                path.unlink()
                remove_empty_folders(self.created)
        os.close(self.fd)  # releases the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_file(folder: Path) -> tuple[int, bool]:
    """A descriptor of `folder`'s lock file, flocked by this process, and whether this call
    created the file."""
    path = folder / LOCK_FILE
    while True:
        try:
            fd, created = (
                os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666),
                True,
            )
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR | os.O_CLOEXEC), False
            except FileNotFoundError:
                continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise _busy(folder, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # A holder that released and removed the file meanwhile leaves us a dead inode.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd, created
        os.close(fd)


def lock_holder(folder: str | Path) -> int | None:
    """The PID of the process holding `folder`'s run lock (0 if unreadable), or None when no
    other process holds it."""
    folder = Path(folder)
    if folder.absolute() in RunLock._held:
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    finally:
        os.close(fd)
    return None


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def _busy(folder: Path, pid: int) -> RunBusyError:
    who = f"PID {pid}" if pid else "PID unknown"
    return RunBusyError(
        f"{folder} is being written by another fashiongen process ({who}): "
        "wait for it to finish or stop it, or choose another path"
    )


@contextlib.contextmanager
def locked_if_run(folder: str | Path) -> Iterator[None]:
    """Hold `folder`'s run lock meanwhile, if it is a run folder (it has a lock file) that
    this process does not hold yet; refused (RunBusyError) while another process holds it."""
    folder = Path(folder)
    if not (folder / LOCK_FILE).exists() or folder.absolute() in RunLock._held:
        yield
        return
    with RunLock(folder):
        yield
