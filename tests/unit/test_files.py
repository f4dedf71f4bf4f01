"""`fashiongen.files`: refusing, staging and renaming outputs, and the run lock (milliseconds)."""

from __future__ import annotations

import os

import pytest

import fashiongen.files as files
from fashiongen.errors import OutputExistsError, RunBusyError
from fashiongen.files import (
    LOCK_FILE,
    RunLock,
    atomic_path,
    check_free,
    lock_holder,
    move_into_place,
    staged_folder,
)


@pytest.fixture(params=["renameat2", "fallback"])
def renames(request, monkeypatch):
    """Each test runs with renameat2 and with the plain renames used where it is missing."""
    if request.param == "fallback":
        monkeypatch.setattr(files, "_renameat2", None)
    return request.param


def test_a_folder_appears_whole_and_replaces_only_when_asked(tmp_path, renames):
    out = tmp_path / "out"
    with staged_folder(out) as tmp:
        (tmp / "a.txt").write_text("new")
        assert not out.exists(), "nothing visible until complete"
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with pytest.raises(OutputExistsError, match="already exists and is not empty"):
        staged_folder(out).__enter__()
    with staged_folder(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("newer")
        assert (out / "a.txt").read_text() == "new", "the old stays until the new is complete"
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_the_old_content_and_no_temporary(tmp_path, renames):
    out = tmp_path / "deep" / "out.txt"

    def fail(overwrite: bool) -> None:
        with atomic_path(out, overwrite=overwrite) as tmp:
            tmp.write_text("half")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail(overwrite=False)
    assert not (tmp_path / "deep").exists(), "the folders it created are gone too"
    files.write_text_atomic(out, "old")
    with pytest.raises(RuntimeError):
        fail(overwrite=True)
    assert out.read_text() == "old" and os.listdir(out.parent) == ["out.txt"]


def test_a_file_and_a_folder_replace_each_other_only_with_overwrite(tmp_path, renames):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt already exists: pass --overwrite"):
        check_free(notes, overwrite=False, folder=True)
    with staged_folder(notes, overwrite=True) as tmp:
        (tmp / "x").write_text("x")
    assert notes.is_dir()
    with atomic_path(notes, overwrite=True) as tmp:
        tmp.write_text("a file again")
    assert notes.read_text() == "a file again"


def test_an_output_that_appears_meanwhile_is_not_clobbered(tmp_path, renames):
    out = tmp_path / "out.txt"
    tmp = tmp_path / ".out.txt.1.tmp"
    tmp.write_text("mine")
    out.write_text("theirs")
    with pytest.raises(OutputExistsError, match="appeared while this command worked"):
        move_into_place(tmp, out, overwrite=False)
    assert out.read_text() == "theirs"


def test_an_empty_folder_is_free(tmp_path):
    (tmp_path / "empty").mkdir()
    check_free(tmp_path / "empty", overwrite=False, folder=True)
    with pytest.raises(OutputExistsError):
        check_free(tmp_path / "empty", overwrite=False)  # a file output cannot go there


def test_the_lock_names_its_holder_and_cleans_up_after_a_failed_start(tmp_path):
    run = tmp_path / "runs" / "run"
    lock = RunLock(run).acquire()
    assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert lock_holder(run) is None, "this process never refuses itself"
    lock.release()
    assert not (tmp_path / "runs").exists(), "created for nothing: removed again"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("x")
    with RunLock(run, keep_file=False):
        assert (run / LOCK_FILE).exists()
    assert sorted(p.name for p in run.iterdir()) == ["config.toml"], "left as it was"
    with RunLock(run):
        pass
    assert (run / LOCK_FILE).exists(), "a run keeps its lock file"


def test_a_lock_held_elsewhere_is_refused_with_its_pid(tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("4242\n")
    other = os.open(run / LOCK_FILE, os.O_RDONLY)  # another open file: flock conflicts
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        assert lock_holder(run) == 4242
        with pytest.raises(
            RunBusyError,
            match=r"run is being written by another fashiongen "
            r"process \(PID 4242\)",
        ):
            RunLock(run).acquire()
        with pytest.raises(RunBusyError, match="PID 4242"):
            check_free(run, overwrite=True, folder=True)
    finally:
        os.close(other)
    assert lock_holder(run) is None


def test_cache_root_follows_an_absolute_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.cache_root() == tmp_path / "xdg" / "fashiongen"


@pytest.mark.parametrize("value", ["", "relative/cache", "./cache"])
def test_cache_root_ignores_an_empty_or_relative_xdg_cache_home(value, tmp_path, monkeypatch):
    """The XDG Base Directory spec: a relative path is invalid and must be ignored."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert files.cache_root() == tmp_path / ".cache" / "fashiongen"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fashion-mnist", "fashion-mnist"),
        ("folder:/data/my shoes/", "folder_data_my_shoes"),
        ("run.v2_final", "run.v2_final"),
        ("ä*?", "_"),
        ("", "fallback"),
        ("///", "fallback"),
    ],
)
def test_safe_name_keeps_letters_digits_dot_dash_underscore(name, expected):
    assert files.safe_name(name, fallback="fallback") == expected


def test_remove_folder_and_stale_temporaries(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "w").write_text("x")
    files.remove_folder(tmp_path / "ck")
    files.remove_folder(tmp_path / "missing")  # nothing there: nothing to do
    (tmp_path / ".half.abc.tmp").mkdir()
    (tmp_path / ".part.tmp").write_text("x")
    (tmp_path / "kept.tmp").write_text("x")  # not hidden: not a temporary of ours
    removed = files.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".half.abc.tmp", ".part.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["kept.tmp"]
