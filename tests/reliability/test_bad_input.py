"""Bad input, one row of docs/errors.md each: one line on stderr naming the problem and what
to do, exit code 2, no traceback (unless --debug), nothing half-written.

Every case runs `fashiongen.cli.main` in-process; two also run as real processes for their
exit codes. A case is (name, setup) where setup(tmp_path, monkeypatch) returns the CLI
arguments; the expected message is a regular expression searched in the error line.
"""

from __future__ import annotations

import errno
import gzip
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import TRAIN, child_env, hidden_temporaries, run_process, train_run

import fashiongen.files as files
from fashiongen.checkpoint import list_checkpoints, load_checkpoint
from fashiongen.data.sources import write_idx_split
from fashiongen.errors import ConfigError

OUT = "out"  # every case that could write does so under tmp_path / OUT


# ---------------------------------------------------------------- inputs


def _idx_dir(
    root: Path, num_train: int = 40, num_labels: int | None = None, max_label: int = 9
) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", num_train), ("test", 8)):
        labels = rng.integers(0, max_label + 1, n if split == "test" else num_labels or n)
        write_idx_split(root, split, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels)
    return root


def _train_on(data: str, *extra: str) -> list[str]:
    return [*TRAIN[:2], data, *TRAIN[3:], "--max-steps", "2", *extra]


def _truncated_idx(tmp: Path) -> list[str]:
    root = _idx_dir(tmp / "idx")
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    return _train_on("fashion-mnist", "--data-dir", str(root))


def _garbage_idx(tmp: Path) -> list[str]:
    root = _idx_dir(tmp / "idx")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02garbage"))
    return _train_on("fashion-mnist", "--data-dir", str(root))


def _folder(tmp: Path, sizes: list[tuple[int, int]] | None = None) -> Path:
    root = tmp / "images"
    for label, name in enumerate(["bag", "coat"]):
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes or [(28, 28)] * 40):
            Image.new("L", size, 10 * label + i).save(root / name / f"{i:03d}.png")
    return root


def _unreadable_image(tmp: Path) -> list[str]:
    root = _folder(tmp)
    (root / "coat" / "007.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return _train_on(f"folder:{root}")


def _odd_sized_image(tmp: Path) -> list[str]:
    return _train_on(f"folder:{_folder(tmp, [(28, 28)] * 39 + [(30, 20)])}")


def _empty_folder(tmp: Path) -> list[str]:
    (tmp / "images").mkdir()
    return _train_on(f"folder:{tmp / 'images'}")


def _folder_without_images(tmp: Path) -> list[str]:
    (tmp / "images" / "bag").mkdir(parents=True)
    (tmp / "images" / "bag" / "notes.txt").write_text("no pictures here")
    return _train_on(f"folder:{tmp / 'images'}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused


def _offline(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp / "home"))
    monkeypatch.setenv("FASHIONGEN_MIRROR", f"http://127.0.0.1:{_closed_port()}/")
    for var in ("XDG_CACHE_HOME", "FASHIONGEN_DATA"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("bad-input") / "run", "--max-steps", "2")


def _sample(*extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda run, tmp: ["sample", str(run), "--num-samples", "8", *extra]


def _without_module(monkeypatch: pytest.MonkeyPatch, name: str, argv: list[str]) -> list[str]:
    """Run `argv` as if package `name` were not installed."""
    import builtins

    real_import = builtins.__import__

    def missing(module, *args, **kwargs):
        if module == name:
            raise ImportError(f"No module named {name!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    return argv


def _full_disk_on(target: str, monkeypatch: pytest.MonkeyPatch, after_calls: int = 0) -> None:
    """Make `target` (module.attr) write a few bytes, then fail as a full disk does."""
    import importlib

    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, attr)
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after_calls:
            return real(*args, **kwargs)
        destination = next((a for a in args if isinstance(a, str | Path)), None)
        if destination is not None:
            Path(destination).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module, attr, full)


def _png_save_fills_disk(monkeypatch: pytest.MonkeyPatch, after_calls: int = 0) -> None:
    real = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after_calls:
            return real(self, fp, *args, **kwargs)
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", save)


# ---------------------------------------------------------------- the table

# name: (setup(tmp, monkeypatch, trained_run) -> argv, error pattern)
CASES: dict[str, tuple[Callable, str]] = {
    # data
    "truncated IDX": (
        lambda tmp, mp, run: _truncated_idx(tmp),
        r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip data .*; "
        r"replace the file",
    ),
    "corrupt IDX": (
        lambda tmp, mp, run: _garbage_idx(tmp),
        r"train-labels-idx1-ubyte\.gz: not an IDX file .*; replace the file",
    ),
    "images and labels disagree": (
        lambda tmp, mp, run: _train_on(
            "fashion-mnist", "--data-dir", str(_idx_dir(tmp / "idx", 40, num_labels=39))
        ),
        r"holds 40 images but .*train-labels-idx1-ubyte\.gz holds 39 labels; replace",
    ),
    "labels out of range": (
        lambda tmp, mp, run: _train_on(
            "fashion-mnist", "--data-dir", str(_idx_dir(tmp / "idx", max_label=12))
        ),
        r"label\(s\) out of range 0\.\.9",
    ),
    "unreadable image in a folder": (
        lambda tmp, mp, run: _unreadable_image(tmp),
        r"1 of 80 image files in .*images cannot be used \(first: .*coat/007\.png: cannot "
        r"identify image file .*\); fix or remove them",
    ),
    "odd-sized image in a folder": (
        lambda tmp, mp, run: _odd_sized_image(tmp),
        r"2 of 80 image files .* size 30x20 differs from 000\.png's 28x28\); set "
        r"data\.image_size to resize every image",
    ),
    "empty folder": (
        lambda tmp, mp, run: _empty_folder(tmp),
        r"folder dataset .*images has no class sub-folders \(expected one folder",
    ),
    "folder without images": (
        lambda tmp, mp, run: _folder_without_images(tmp),
        r"no PNG or JPEG images in the class folders of .*images",
    ),
    "missing folder": (
        lambda tmp, mp, run: _train_on(f"folder:{tmp / 'nowhere'}"),
        r"folder dataset .*nowhere is not a directory",
    ),
    "unknown dataset": (
        lambda tmp, mp, run: _train_on("imagenet"),
        r"unknown dataset 'imagenet'; choose one of fashion-mnist, mnist",
    ),
    "dataset offline (train)": (
        lambda tmp, mp, run: _offline(tmp, mp) or _train_on("mnist"),
        r"could not download http://127\.0\.0\.1:\d+/train-images-idx3-ubyte\.gz \(.*\); to "
        r"work offline, copy the four IDX files .* into .*home/\.cache/fashiongen/mnist",
    ),
    "dataset offline (data info)": (
        lambda tmp, mp, run: _offline(tmp, mp) or ["data", "info", "mnist"],
        r"could not download .*; to work offline",
    ),
    # models, samplers, config
    "unknown model": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--model", "gpt"],
        r"unknown model 'gpt'; choose one of: .*dcgan",
    ),
    "unknown sampler (train)": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "sample.sampler=euler"],
        r"unknown sampler 'euler'; choose one of: ancestral, ddim, dpmpp_2m",
    ),
    "unknown sampler (sample)": (
        lambda tmp, mp, run: [*_sample("--sampler", "euler")(run, tmp)],
        r"unknown sampler 'euler'; choose one of",
    ),
    "a setting the model does not use (sample)": (
        lambda tmp, mp, run: [*_sample("--steps", "4")(run, tmp)],
        r"a dcgan model does not use sample\.num_steps: it samples in one fixed way",
    ),
    "unknown config key": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "train.lrr=1"],
        r"unknown config key 'train\.lrr' \(known keys of \[train\]: .*lr",
    ),
    "unknown config section": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "x.y=1"],
        r"unknown config key 'x'",
    ),
    "config value of the wrong type": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "train.lr=fast"],
        r"bad value for train\.lr: 'fast' \(expected a number\)",
    ),
    "config value out of range": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "train.lr=-1"],
        r"train\.lr must be > 0",
    ),
    "non-finite config value": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "train.lr=inf"],
        r"bad value for train\.lr: inf \(expected a finite number\)",
    ),
    "config section given a value": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "model=3"],
        r"\[model\] must be a table",
    ),
    "override without a value": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "train.lr"],
        r"bad override 'train\.lr': expected key=value",
    ),
    "invalid TOML file": (
        lambda tmp, mp, run: (
            (tmp / "bad.toml").write_text("[train\nlr = ")
            and [*_train_on("synthetic"), "--config", str(tmp / "bad.toml")]
        ),
        r"config file .*bad\.toml is not valid TOML",
    ),
    "missing config file": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--config", str(tmp / "none.toml")],
        r"config file not found: .*none\.toml",
    ),
    # numbers on the command line
    "--num-samples 0": (
        lambda tmp, mp, run: _sample()(run, tmp)[:2] + ["--num-samples", "0"],
        r"argument --num-samples: must be at least 1, got 0 \(see: "
        r"fashiongen sample --help\)",
    ),
    "--steps 5000": (
        lambda tmp, mp, run: _sample("--steps", "5000")(run, tmp),
        r"sample\.num_steps must be between 1 and 1000",
    ),
    "--backend onnx without onnxruntime": (
        lambda tmp, mp, run: _without_module(
            mp, "onnxruntime", _sample("--backend", "onnx")(run, tmp)
        ),
        r"the onnx backend needs onnxruntime: pip install 'fashiongen\[onnx\]'",
    ),
    "--backend tensorrt": (
        lambda tmp, mp, run: _sample("--backend", "tensorrt")(run, tmp),
        r"argument --backend: invalid choice: 'tensorrt'",
    ),
    "--precision fp16": (
        lambda tmp, mp, run: _sample("--precision", "fp16")(run, tmp),
        r"argument --precision: invalid choice: 'fp16'",
    ),
    "train.precision=fp16": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--set", "train.precision=fp16"],
        r"bad value for train\.precision: 'fp16' \(choose one of 'auto', 'fp32', 'bf16'\)",
    ),
    "--eta 2": (
        lambda tmp, mp, run: _sample("--eta", "2")(run, tmp),
        r"sample\.eta must lie in \[0, 1\]",
    ),
    "--guidance-scale 99": (
        lambda tmp, mp, run: _sample("--guidance-scale", "99")(run, tmp),
        r"sample\.guidance_scale must lie in \[0, 50\]",
    ),
    "--seed 2**64": (
        lambda tmp, mp, run: _sample("--seed", str(2**64))(run, tmp),
        r"argument --seed: must be between 0 and 9223372036854775807",
    ),
    "--epochs -1": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--epochs", "-1"],
        r"argument --epochs: must be at least 1, got -1",
    ),
    "--max-steps 1.5": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--max-steps", "1.5"],
        r"argument --max-steps: expected a whole number, got '1\.5'",
    ),
    "--budget-minutes -5": (
        lambda tmp, mp, run: [*_train_on("synthetic"), "--budget-minutes", "-5"],
        r"train\.max_minutes must be > 0",
    ),
    "sample output of unknown type": (
        lambda tmp, mp, run: _sample("--out", str(tmp / OUT / "x.jpg"))(run, tmp),
        r"cannot tell how to write .*x\.jpg: use a \.png grid, a \.npz file, or a folder/",
    ),
    # where outputs go
    "output under a regular file (train)": (
        lambda tmp, mp, run: (
            (tmp / OUT).write_text("a file")
            and [*_train_on("synthetic"), "--out", str(tmp / OUT / "run")]
        ),
        r"Not a directory: .*out/run; part of the path is a file, not a folder",
    ),
    "output under a regular file (sample)": (
        lambda tmp, mp, run: (
            (tmp / OUT).write_text("a file")
            and _sample("--out", str(tmp / OUT / "g.png"))(run, tmp)
        ),
        r"File exists: .*out; a file stands where a folder is needed",
    ),
    "read-only output folder": (
        lambda tmp, mp, run: (
            mp.setattr(files.tempfile, "mkstemp", _denied)
            or _sample("--out", str(tmp / OUT / "g.png"))(run, tmp)
        ),
        r"Permission denied: .*out; choose a writable place",
    ),
    "full disk (grid PNG)": (
        lambda tmp, mp, run: (
            _png_save_fills_disk(mp) or _sample("--out", str(tmp / OUT / "g.png"))(run, tmp)
        ),
        r"No space left on device; free some disk space",
    ),
    "full disk (npz)": (
        lambda tmp, mp, run: (
            _full_disk_on("numpy.savez_compressed", mp)
            or _sample("--out", str(tmp / OUT / "s.npz"))(run, tmp)
        ),
        r"No space left on device; free some disk space",
    ),
    "full disk (folder of PNGs)": (
        lambda tmp, mp, run: (
            _png_save_fills_disk(mp, after_calls=3) or _sample("--out", f"{tmp / OUT}/")(run, tmp)
        ),
        r"No space left on device; free some disk space",
    ),
}


def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, trained, tmp_path, monkeypatch, cli):
    setup, pattern = CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path, monkeypatch, trained)
    if "--out" not in argv and argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / OUT)]
    inputs = _files(tmp_path)
    result = cli(*argv)
    assert result.code == 2, (result.code, result.out, result.err)
    line = result.one_error_line()
    import re

    assert re.search(pattern, line), line
    left = _files(tmp_path) - inputs
    assert left == set(), f"left behind: {sorted(map(str, left))}"
    assert hidden_temporaries(tmp_path) == []


def test_debug_shows_the_traceback(cli):
    with pytest.raises(ConfigError, match="unknown config key"):
        cli("--debug", "train", "--set", "train.lrr=1", "--dry-run")


def test_full_disk_during_training_keeps_the_last_checkpoint(tmp_path, monkeypatch, cli):
    """The disk fills at the second checkpoint: exit 2, no half checkpoint, and the first
    one resumes once there is space again."""
    _full_disk_on("torch.save", monkeypatch, after_calls=1)  # the training state's write
    run = tmp_path / "run"
    result = cli(
        *TRAIN, "--max-steps", "12", "--set", "train.checkpoint_every_n_steps=4", "--out", run
    )
    assert "No space left on device; free some disk space" in result.one_error_line()
    assert [f.name for f in list_checkpoints(run)] == ["step_0000004"]
    assert not (run / "final").exists()
    assert hidden_temporaries(run) == []
    monkeypatch.undo()
    assert cli(*TRAIN, "--resume", "--out", run, "--max-steps", "12").code == 0
    assert load_checkpoint(run / "final")[0].step == 12


@pytest.mark.slow
def test_real_exit_codes(trained, tmp_path):
    """Two rows again, as real processes: the exit code the shell sees, and stderr."""
    home = tmp_path / "home"
    home.mkdir()
    env = child_env(HOME=str(home), FASHIONGEN_MIRROR=f"http://127.0.0.1:{_closed_port()}/")
    for var in ("XDG_CACHE_HOME", "FASHIONGEN_DATA"):
        env.pop(var, None)
    offline = run_process(*_train_on("mnist"), "--out", tmp_path / OUT, env=env, cwd=tmp_path)
    usage = run_process("sample", trained, "--num-samples", "0", cwd=tmp_path)
    for done, message in ((offline, "could not download"), (usage, "--num-samples")):
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
        assert message in done.stderr
    assert list(home.iterdir()) == [] and not (tmp_path / OUT).exists()
