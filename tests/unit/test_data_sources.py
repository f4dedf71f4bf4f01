"""Finding IDX datasets (data_dir > $FASHIONGEN_DATA > cache > system) and downloading them.

Downloads are served by a local `http.server` on 127.0.0.1 with small generated IDX files;
nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen.data import load_dataset, sources
from fashiongen.data.sources import (
    FILE_STEMS,
    SOURCES,
    cache_dir,
    download_idx_files,
    resolve_idx_dir,
    write_idx_split,
)
from fashiongen.errors import DataError

SLOW_RESPONSE_S = 0.5


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real cache, data root, mirror or system directory can leak into a test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("FASHIONGEN_DATA", "FASHIONGEN_MIRROR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(
        SOURCES, "fashion-mnist", dataclasses.replace(SOURCES["fashion-mnist"], system_dirs=())
    )
    return home


def make_idx_dir(
    directory: Path, num_train: int, num_test: int = 2, *, compress: bool = True, size: int = 4
) -> Path:
    """A tiny dataset; image i of the train split is filled with the value i."""
    for split, n in (("train", num_train), ("test", num_test)):
        images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, size, size))
        write_idx_split(directory, split, images, np.arange(n) % 10, compress=compress)
    return directory


# ---------------------------------------------------------------- resolution


def test_resolution_order_data_dir_env_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = make_idx_dir(tmp_path / "explicit", 3)
    env_root = tmp_path / "env"
    make_idx_dir(env_root / "mnist", 4)
    cache = make_idx_dir(cache_dir("mnist"), 5)
    assert cache == tmp_path / "home" / ".cache" / "fashiongen" / "mnist"
    monkeypatch.setenv("FASHIONGEN_DATA", str(env_root))

    assert len(load_dataset("mnist", data_dir=explicit, download=False)) == 3
    ds = load_dataset("mnist", download=False)
    assert len(ds) == 4
    assert ds.source == str(env_root / "mnist")
    monkeypatch.delenv("FASHIONGEN_DATA")
    ds = load_dataset("mnist", download=False)
    assert len(ds) == 5
    assert ds.source == str(cache)


def test_env_dir_itself_and_subdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_idx_dir(tmp_path / "root", 6)
    monkeypatch.setenv("FASHIONGEN_DATA", str(root))
    assert resolve_idx_dir("mnist") == root
    make_idx_dir(root / "mnist", 7)  # the named sub-directory comes first
    assert resolve_idx_dir("mnist") == root / "mnist"
    assert len(load_dataset("mnist", download=False)) == 7


def test_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("mnist") == tmp_path / "xdg" / "fashiongen" / "mnist"
    make_idx_dir(cache_dir("mnist"), 3)
    assert len(load_dataset("mnist", download=False)) == 3


def test_system_dir_comes_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = make_idx_dir(tmp_path / "usr-share", 8)
    monkeypatch.setitem(
        SOURCES,
        "fashion-mnist",
        dataclasses.replace(SOURCES["fashion-mnist"], system_dirs=(str(system),)),
    )
    ds = load_dataset("fashion-mnist", download=False)
    assert len(ds) == 8
    assert ds.source == str(system)
    assert ds.class_names[0] == "T-shirt/top"
    make_idx_dir(cache_dir("fashion-mnist"), 3)
    assert len(load_dataset("fashion-mnist", download=False)) == 3


def test_explicit_data_dir_never_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_idx_dir(cache_dir("mnist"), 5)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not found in data dir") as error:
        load_dataset("mnist", data_dir=empty)
    assert str(empty) in str(error.value)


def test_data_dir_with_named_subdir(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "data" / "mnist", 3)
    assert len(load_dataset("mnist", data_dir=tmp_path / "data", download=False)) == 3


def test_three_of_four_files_is_not_a_dataset(tmp_path: Path) -> None:
    directory = make_idx_dir(tmp_path / "d", 3)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    assert sources.find_idx_files(directory) is None
    with pytest.raises(DataError, match="not found in data dir"):
        load_dataset("mnist", data_dir=directory)


def test_uncompressed_files(tmp_path: Path) -> None:
    directory = make_idx_dir(tmp_path / "raw", 3, compress=False)
    assert all(p.suffix != ".gz" for p in directory.iterdir())
    ds = load_dataset("mnist", "test", data_dir=directory)
    assert ds.images.shape == (2, 1, 4, 4)
    assert ds.labels.tolist() == [0, 1]


def test_split_contents(tmp_path: Path) -> None:
    directory = make_idx_dir(tmp_path / "d", 12)
    ds = load_dataset("mnist", data_dir=directory)
    assert ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert ds.images[:, 0, 0, 0].tolist() == list(range(12))
    assert ds.labels.tolist() == [i % 10 for i in range(12)]
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.split == "train"


def test_second_load_is_cached_and_independent(tmp_path: Path) -> None:
    directory = make_idx_dir(tmp_path / "d", 5)
    first = load_dataset("mnist", data_dir=directory)
    hits = sources._read_split_cached.cache_info().hits
    second = load_dataset("mnist", data_dir=directory)
    assert sources._read_split_cached.cache_info().hits == hits + 1
    first.images.zero_()
    assert second.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert load_dataset("mnist", data_dir=directory).images.sum() > 0


def test_changed_file_is_reread(tmp_path: Path) -> None:
    directory = make_idx_dir(tmp_path / "d", 5)
    assert len(load_dataset("mnist", data_dir=directory)) == 5
    make_idx_dir(directory, 6)
    assert len(load_dataset("mnist", data_dir=directory)) == 6


def test_malformed_file_in_dataset_dir(tmp_path: Path) -> None:
    directory = make_idx_dir(tmp_path / "d", 5)
    bad = directory / "train-labels-idx1-ubyte.gz"
    write_idx_split(directory, "train", np.zeros((5, 4, 4), np.uint8), [0, 1, 2, 3, 42])
    with pytest.raises(DataError, match="out of range") as error:
        load_dataset("mnist", data_dir=directory)
    assert str(bad) in str(error.value)


# ---------------------------------------------------------------- downloads


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; /slow/... answers late, /short/... breaks off mid-body."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            time.sleep(SLOW_RESPONSE_S)
            self.path = self.path[len("/slow") :]
        if self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + bytes(100))
            self.close_connection = True
            return
        super().do_GET()


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or hang up are part of the tests


@dataclasses.dataclass
class Mirror:
    url: str
    files: Path
    md5s: dict[str, str]


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    """A local HTTP server with a tiny MNIST-like dataset (7 train, 3 test images)."""
    files = make_idx_dir(tmp_path / "served", 7, 3)
    md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in files.iterdir()}
    handler = functools.partial(_Handler, directory=str(files))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield Mirror(f"http://127.0.0.1:{server.server_address[1]}/", files, md5s)
    finally:
        server.shutdown()
        server.server_close()


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_download_success(tmp_path: Path, mirror: Mirror) -> None:
    target = tmp_path / "cache" / "mnist"
    assert download_idx_files("mnist", target, mirror=mirror.url, md5s=mirror.md5s) == target
    assert _tree(target) == sorted(stem + ".gz" for stem in FILE_STEMS)
    for name in mirror.md5s:
        assert (target / name).read_bytes() == (mirror.files / name).read_bytes()


def test_download_only_fetches_missing_files(tmp_path: Path, mirror: Mirror) -> None:
    target = tmp_path / "target"
    make_idx_dir(target, 7, 3)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (target / name).unlink()
    (mirror.files / "t10k-images-idx3-ubyte.gz").unlink()  # would 404 if it were asked for
    download_idx_files("mnist", target, mirror=mirror.url, md5s=mirror.md5s)
    assert sources.find_idx_files(target) is not None


def test_load_dataset_downloads_into_cache(monkeypatch: pytest.MonkeyPatch, mirror: Mirror) -> None:
    monkeypatch.setenv("FASHIONGEN_MIRROR", mirror.url)
    monkeypatch.setitem(SOURCES, "mnist", dataclasses.replace(SOURCES["mnist"], md5s=mirror.md5s))
    ds = load_dataset("mnist", "test")
    assert len(ds) == 3
    assert ds.labels.tolist() == [0, 1, 2]
    assert ds.source.startswith(str(cache_dir("mnist")))
    assert mirror.url in ds.source
    assert len(load_dataset("mnist", "train", download=False)) == 7


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, mirror: Mirror) -> None:
    md5s = dict(mirror.md5s, **{"t10k-images-idx3-ubyte.gz": "0" * 32})
    target = tmp_path / "a" / "b" / "mnist"
    with pytest.raises(DataError, match="failed its checksum") as error:
        download_idx_files("mnist", target, mirror=mirror.url, md5s=md5s)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "0" * 32 in message
    assert "copy the four IDX files" in message
    assert str(target) in message
    assert "FASHIONGEN_DATA" in message
    assert "--data-dir" in message
    assert not (tmp_path / "a").exists()  # files fetched earlier and created dirs are gone


def test_http_404_leaves_nothing(tmp_path: Path, mirror: Mirror) -> None:
    (mirror.files / "t10k-labels-idx1-ubyte.gz").unlink()
    target = tmp_path / "existing"
    target.mkdir()
    (target / "unrelated.txt").write_text("kept")
    with pytest.raises(DataError, match="HTTP 404") as error:
        download_idx_files("mnist", target, mirror=mirror.url, md5s=mirror.md5s)
    assert "t10k-labels-idx1-ubyte.gz" in str(error.value)
    assert "\n" not in str(error.value)
    assert _tree(target) == ["unrelated.txt"]


def test_connection_broken_mid_body_leaves_nothing(tmp_path: Path, mirror: Mirror) -> None:
    target = tmp_path / "mnist"
    with pytest.raises(DataError, match="could not download|failed its checksum"):
        download_idx_files("mnist", target, mirror=mirror.url + "short/", md5s=mirror.md5s)
    assert not target.exists()


def test_timeout_leaves_nothing(tmp_path: Path, mirror: Mirror) -> None:
    target = tmp_path / "mnist"
    start = time.perf_counter()
    with pytest.raises(DataError, match="timed out"):
        download_idx_files(
            "mnist", target, mirror=mirror.url + "slow/", md5s=mirror.md5s, timeout=0.1
        )
    assert time.perf_counter() - start < SLOW_RESPONSE_S + 1
    assert not target.exists()


def test_refused_connection(tmp_path: Path) -> None:
    with socket_on_free_port() as port, pytest.raises(DataError, match="could not download"):
        download_idx_files("mnist", tmp_path / "m", mirror=f"http://127.0.0.1:{port}/", timeout=1)
    assert not (tmp_path / "m").exists()


def test_interrupted_download_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted:
        def __init__(self) -> None:
            self.calls = 0

        def __enter__(self) -> Interrupted:
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def read(self, size: int) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return b"partial"

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Interrupted())
    target = tmp_path / "mnist"
    with pytest.raises(KeyboardInterrupt):
        download_idx_files("mnist", target, mirror="http://127.0.0.1:9/")
    assert not target.exists()


def test_download_false_says_what_to_do() -> None:
    with pytest.raises(DataError, match="downloading is off") as error:
        load_dataset("fashion-mnist", download=False)
    message = str(error.value)
    assert str(cache_dir("fashion-mnist")) in message
    assert "--data-dir" in message
    assert "FASHIONGEN_DATA" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message
    assert not cache_dir("fashion-mnist").exists()
    with pytest.raises(DataError) as error:
        load_dataset("mnist", download=False)
    assert "apt-get" not in str(error.value)


def test_official_sources_are_complete() -> None:
    for source in SOURCES.values():
        assert sorted(source.md5s) == sorted(stem + ".gz" for stem in FILE_STEMS)
        assert len(source.class_names) == 10
        assert source.base_url.endswith("/")
    assert SOURCES["fashion-mnist"].base_url.startswith("http://fashion-mnist.s3-website")


@contextlib.contextmanager
def socket_on_free_port() -> Iterator[int]:
    """A port on 127.0.0.1 with nothing listening (bound, never listened on)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
