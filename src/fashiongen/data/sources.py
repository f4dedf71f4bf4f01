"""Where Fashion-MNIST (Xiao et al., arXiv:1708.07747) and MNIST come from: local directories,
the user cache, or a download.

A directory holds a dataset when it has the four standard IDX files, gzip-compressed or not.
Resolution order: an explicit `data_dir` (itself or `data_dir/<name>`; missing files there are
an error, never a silent fall-through); `$FASHIONGEN_DATA/<name>`, then `$FASHIONGEN_DATA`
itself; the user cache `~/.cache/fashiongen/<name>` (under `$XDG_CACHE_HOME` when set); system
directories such as `/usr/share/datasets/fashion-mnist` (Debian's dataset-fashion-mnist); and
otherwise a download into the user cache from the official source, or from `$FASHIONGEN_MIRROR`.
Downloads use urllib with a timeout and stream into a temporary file beside the target, which
is renamed into place only once its MD5 matches, so a failed, interrupted or corrupted
download leaves nothing behind. Parsed splits are cached in-process, keyed by file path, size
and modification time, so loading a split twice decodes it once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashiongen.data.dataset import ImageDataset
from fashiongen.data.idx import read_idx_split, write_idx
from fashiongen.errors import DataError
from fashiongen.files import atomic_path, cache_root

DATA_ENV = "FASHIONGEN_DATA"
MIRROR_ENV = "FASHIONGEN_MIRROR"
DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILE_STEMS: tuple[str, ...] = tuple(stem for pair in SPLIT_FILES.values() for stem in pair)
GZ = ".gz"


@dataclass(frozen=True)
class IdxSource:
    """A dataset published as the four standard IDX files.

    Attributes:
        name: the dataset's name, also its sub-directory under data roots and the cache.
        base_url: where the `.gz` files are downloaded from (ends with "/").
        md5s: MD5 of each downloaded `.gz` file, by file name.
        class_names: one name per label.
        system_dirs: directories a system package installs the files into.
        apt_package: the Debian package holding the files, for the offline hint.
    """

    name: str
    base_url: str
    md5s: Mapping[str, str]
    class_names: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None


SOURCES: dict[str, IdxSource] = {
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5s={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
    ),
    "mnist": IdxSource(
        name="mnist",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5s={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        class_names=tuple(str(digit) for digit in range(10)),
    ),
}


def cache_dir(name: str) -> Path:
    """The user cache directory of a dataset: `files.cache_root() / name`."""
    return cache_root() / name


def find_idx_files(directory: str | Path) -> dict[str, Path] | None:
    """The four IDX files in `directory` by stem (`.gz` preferred), or None if any is missing."""
    directory = Path(directory)
    found = {}
    for stem in FILE_STEMS:
        path = next((p for p in (directory / (stem + GZ), directory / stem) if p.is_file()), None)
        if path is None:
            return None
        found[stem] = path
    return found


def resolve_idx_dir(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first directory holding dataset `name`, in resolution order, or None.

    Raises:
        DataError: `name` is unknown, or `data_dir` is given but neither it nor
            `data_dir/<name>` holds the files.
    """
    get_source(name)
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        for candidate in (data_dir, data_dir / name):
            if find_idx_files(candidate) is not None:
                return candidate
        raise DataError(
            f"{name} not found in data dir {data_dir}: expected {_file_list()} "
            f"there or in {data_dir / name}"
        )
    return next((d for d in search_dirs(name) if find_idx_files(d) is not None), None)


def search_dirs(name: str) -> list[Path]:
    """Where dataset `name` is looked for when no data_dir is given, in order."""
    dirs = []
    if os.environ.get(DATA_ENV):
        env_dir = Path(os.environ[DATA_ENV]).expanduser()
        dirs += [env_dir / name, env_dir]
    dirs.append(cache_dir(name))
    return dirs + [Path(d) for d in get_source(name).system_dirs]


def download_idx_files(
    name: str,
    target_dir: str | Path | None = None,
    *,
    mirror: str | None = None,
    md5s: Mapping[str, str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the missing IDX files of dataset `name` into `target_dir`.

    Each file streams into a temporary file beside its destination and is renamed into place
    once its MD5 matches. If any file fails, the files this call fetched and the directories it
    created are removed again, so a failed download leaves nothing behind.

    Args:
        name: "fashion-mnist" or "mnist".
        target_dir: where the files go; default the user cache.
        mirror: base URL to fetch from; default `$FASHIONGEN_MIRROR`, else the official one.
        md5s: expected MD5 by file name; default the official files' checksums.
        timeout: seconds to wait for the server on each connection and read.

    Returns:
        The directory now holding the four files.

    Raises:
        DataError: a file could not be fetched or failed its checksum; the message says how
            to provide the files offline.
    """
    source = get_source(name)
    target_dir = Path(target_dir) if target_dir is not None else cache_dir(name)
    base = mirror or os.environ.get(MIRROR_ENV) or source.base_url
    base = base if base.endswith("/") else base + "/"
    md5s = md5s if md5s is not None else source.md5s
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]
    fetched: list[Path] = []
    try:
        for stem in FILE_STEMS:
            if any((target_dir / f).is_file() for f in (stem + GZ, stem)):
                continue
            filename = stem + GZ
            _fetch(
                base + filename,
                target_dir / filename,
                md5s[filename],
                timeout,
                offline_hint(source, target_dir),
            )
            fetched.append(target_dir / filename)
    except BaseException:
        for path in fetched:
            path.unlink(missing_ok=True)
        for directory in created:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    return target_dir


def offline_hint(source: IdxSource, target_dir: Path) -> str:
    """What to do without a network, as the end of an error message."""
    hint = (
        f"to work offline, copy the four IDX files ({_file_list()}) into {target_dir} "
        f"or pass --data-dir / set {DATA_ENV}"
    )
    if source.apt_package:
        hint += f", or run `apt-get install {source.apt_package}`"
    return hint


def load_idx_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    mirror: str | None = None,
    md5s: Mapping[str, str] | None = None,
) -> ImageDataset:
    """Load a split of an IDX dataset at its native shape, downloading it if allowed.

    Returns:
        uint8 (N, 1, 28, 28) images and int64 labels; `source` names the directory.

    Raises:
        DataError: the files are missing (and `download` is False or fails) or malformed.
    """
    source = get_source(name)
    directory = resolve_idx_dir(name, data_dir)
    origin = ""
    if directory is None:
        target = cache_dir(name)
        if not download:
            looked_in = ", ".join(str(d) for d in search_dirs(name))
            raise DataError(
                f"{name} not found (looked in {looked_in}) and downloading is off; "
                f"{offline_hint(source, target)}"
            )
        base = mirror or os.environ.get(MIRROR_ENV) or source.base_url
        directory = download_idx_files(name, target, mirror=base, md5s=md5s)
        origin = f" (downloaded from {base})"
    files = find_idx_files(directory)
    if files is None:  # removed between resolution and reading
        raise DataError(f"{name} files disappeared from {directory}")
    images_stem, labels_stem = SPLIT_FILES[split]
    try:
        images, labels = _read_split_cached(
            _file_key(files[images_stem]), _file_key(files[labels_stem]), len(source.class_names)
        )
    except DataError as e:
        raise DataError(
            f"{e}; replace the file with a good copy (or delete it and let "
            "fashiongen download it again)"
        ) from None
    # Copies, so that changing one dataset in place never reaches the cache or another dataset.
    return ImageDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.copy()),
        class_names=list(source.class_names),
        name=name,
        split=split,
        source=f"{directory}{origin}",
    )


def write_idx_split(
    directory: str | Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    compress: bool = True,
) -> tuple[Path, Path]:
    """Write one split under its standard IDX file names, e.g. to build a tiny test dataset.

    Args:
        directory: where the files go (created if needed).
        split: "train" or "test".
        images: uint8 (N, H, W).
        labels: integer (N,) in [0, 255].
        compress: write `.gz` files.

    Returns:
        The images and labels paths.
    """
    suffix = GZ if compress else ""
    images_stem, labels_stem = SPLIT_FILES[split]
    images_path = Path(directory) / (images_stem + suffix)
    labels_path = Path(directory) / (labels_stem + suffix)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint8).max):
        raise DataError(f"{labels_path}: labels must lie in 0..255 to be stored as uint8")
    return (
        write_idx(images_path, np.asarray(images, dtype=np.uint8)),
        write_idx(labels_path, labels.astype(np.uint8)),
    )


def get_source(name: str) -> IdxSource:
    if name not in SOURCES:
        raise DataError(f"unknown IDX dataset {name!r}; choose one of: {', '.join(SOURCES)}")
    return SOURCES[name]


_FileKey = tuple[str, int, int]  # resolved path, size, mtime in ns


def _file_key(path: Path) -> _FileKey:
    try:
        stat = path.stat()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_split_cached(
    images_key: _FileKey, labels_key: _FileKey, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx_split(images_key[0], labels_key[0], num_classes)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _fetch(url: str, dest: Path, md5: str, timeout: float, hint: str) -> None:
    try:
        with atomic_path(dest) as tmp:
            digest = hashlib.md5(usedforsecurity=False)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != md5:
                raise DataError(
                    f"download of {url} failed its checksum (md5 "
                    f"{digest.hexdigest()}, expected {md5}); {hint}"
                )
    except urllib.error.HTTPError as e:
        raise DataError(f"could not download {url} (HTTP {e.code} {e.reason}); {hint}") from None
    except urllib.error.URLError as e:
        raise DataError(f"could not download {url} ({_reason(e.reason)}); {hint}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DataError(f"could not download {url} ({_reason(e)}); {hint}") from None


def _reason(error: object) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def _file_list() -> str:
    return ", ".join(stem + GZ for stem in FILE_STEMS)
