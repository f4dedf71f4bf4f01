"""IDX reader and writer: round trips, every malformation as a one-line DataError, fuzzing."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fashiongen.data.idx import IDX_DTYPES, parse_idx, read_idx, read_idx_split, write_idx
from fashiongen.errors import DataError


def _raw_idx(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def _assert_one_line_naming(error: pytest.ExceptionInfo[DataError], path: Path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (7,)),
        (np.uint8, (5, 4, 3)),
        (np.int8, (2, 3)),
        (np.int16, (3, 2, 2, 2)),
        (np.int32, (4,)),
        (np.float32, (2, 5)),
        (np.float64, (1, 1, 1, 1, 3)),
        (np.uint8, (0, 28, 28)),
    ],
)
def test_round_trip(tmp_path: Path, suffix: str, dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if suffix else b"\x00\x00")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_big_endian_on_disk(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.idx", np.array([1, 256], dtype=np.int16))
    assert path.read_bytes() == _raw_idx(0x0B, (2,), b"\x00\x01\x01\x00")


def test_gzip_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    path = tmp_path / "compressed-without-suffix"
    path.write_bytes(gzip.compress(_raw_idx(0x08, (3,), b"\x01\x02\x03")))
    np.testing.assert_array_equal(read_idx(path), [1, 2, 3])


def test_gzip_is_deterministic(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    a, b = write_idx(tmp_path / "a.gz", array), write_idx(tmp_path / "b.gz", array)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "type code"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00", "too short"),
        (b"", "too short"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        (_raw_idx(0x08, (4, 5), bytes(19)), "truncated"),
        (_raw_idx(0x0C, (3,), bytes(11)), "truncated"),
        (_raw_idx(0x08, (4,), bytes(5)), "unexpected bytes"),
        (gzip.compress(_raw_idx(0x08, (2,), b"ab"))[:-6], "gzip"),
        (b"\x1f\x8bnot really gzip", "gzip"),
    ],
)
def test_malformed_files_raise_data_error(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=problem) as error:
        read_idx(path)
    _assert_one_line_naming(error, path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as error:
        read_idx(tmp_path / "nope.gz")
    _assert_one_line_naming(error, tmp_path / "nope.gz")


def test_wrong_ndim(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="expected 3 dimension") as error:
        read_idx(path, ndim=3)
    _assert_one_line_naming(error, path)


def test_write_rejects_what_idx_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.uint16))
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "a", np.array(3, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- images + labels


def _split(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    return (write_idx(tmp_path / "images.gz", images), write_idx(tmp_path / "labels.gz", labels))


def test_split_reads_images_and_int64_labels(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    paths = _split(tmp_path, images, np.array([0, 9, 3], dtype=np.uint8))
    got_images, got_labels = read_idx_split(*paths, num_classes=10)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64
    assert got_labels.tolist() == [0, 9, 3]


def test_split_count_mismatch_names_both_files(tmp_path: Path) -> None:
    paths = _split(tmp_path, np.zeros((3, 4, 4), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but .* 2 labels") as error:
        read_idx_split(*paths, num_classes=10)
    _assert_one_line_naming(error, paths[0])
    _assert_one_line_naming(error, paths[1])


def test_split_label_out_of_range(tmp_path: Path) -> None:
    paths = _split(tmp_path, np.zeros((3, 4, 4), np.uint8), np.array([1, 10, 12], np.uint8))
    expected = r"2 label\(s\) out of range 0..9 \(first: 10 at index 1\)"
    with pytest.raises(DataError, match=expected) as error:
        read_idx_split(*paths, num_classes=10)
    _assert_one_line_naming(error, paths[1])


@pytest.mark.parametrize(
    ("images", "labels", "culprit"),
    [
        (np.zeros((3, 4), np.uint8), np.zeros(3, np.uint8), 0),
        (np.zeros((3, 4, 4), np.uint8), np.zeros((3, 1), np.uint8), 1),
        (np.zeros((3, 4, 4), np.float32), np.zeros(3, np.uint8), 0),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int32), 1),
    ],
)
def test_split_wrong_ndim_or_dtype(
    tmp_path: Path, images: np.ndarray, labels: np.ndarray, culprit: int
) -> None:
    paths = _split(tmp_path, images, labels)
    with pytest.raises(DataError) as error:
        read_idx_split(*paths, num_classes=10)
    _assert_one_line_naming(error, paths[culprit])


# ---------------------------------------------------------------- fuzzing

_header_like = st.builds(
    lambda code, dims, tail: (
        bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + tail
    ),
    st.sampled_from([*IDX_DTYPES, 0x00, 0x07, 0xFF]),
    st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), max_size=4),
    st.binary(max_size=80),
)
_any_bytes = st.one_of(
    st.binary(max_size=100),
    _header_like,
    _header_like.map(gzip.compress),
    st.tuples(_header_like.map(gzip.compress), st.integers(0, 40)).map(lambda t: t[0][: -t[1]]),
    st.binary(max_size=60).map(lambda b: b"\x1f\x8b" + b),
)


def _outcome(read: Callable[[], np.ndarray]) -> np.ndarray | DataError:
    """What a read gives: its array or its DataError (any other exception propagates)."""
    try:
        return read()
    except DataError as e:
        return e


def test_empty_shape_with_huge_dimensions_is_a_data_error():
    """Found by the fuzz test: 0 x 436207616 x 2650800128 doubles hold no bytes, but numpy
    cannot make that shape."""
    data = bytes.fromhex("00000e03000000001a0000009e000000")
    with pytest.raises(DataError, match=r"^fuzz: shape 0x436207616x2650800128 is too large"):
        parse_idx(data, "fuzz")


@settings(max_examples=300, deadline=None)
@given(_any_bytes)
def test_fuzz_parse_raises_only_data_error(data: bytes) -> None:
    outcome = _outcome(lambda: parse_idx(data, "fuzz"))
    if isinstance(outcome, DataError):
        assert str(outcome).startswith("fuzz: ")
        assert "\n" not in str(outcome)
    else:
        assert outcome.ndim >= 1


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_any_bytes)
def test_fuzz_read_raises_only_data_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.gz"
    path.write_bytes(data)
    outcome = _outcome(lambda: read_idx(path))
    if isinstance(outcome, DataError):
        assert str(path) in str(outcome)
