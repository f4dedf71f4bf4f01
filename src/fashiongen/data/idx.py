"""IDX files, the container of MNIST and Fashion-MNIST, read and written with numpy.

An IDX file is a magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order, big-endian (LeCun et al.,
http://yann.lecun.com/exdb/mnist/). Files may be gzip-compressed: the reader tells by the gzip
magic bytes, the writer by a `.gz` suffix. Anything malformed raises `DataError` with one line
naming the file and the problem. Data are decoded with one `np.frombuffer` call, never a loop
over images, so the 60,000 Fashion-MNIST training images take a fraction of a second.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from fashiongen.errors import DataError
from fashiongen.files import atomic_path

# Type code -> on-disk dtype (big-endian); the reader returns the native-order equivalent.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
UINT8_CODE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
MAGIC_BYTES = 4
DIM_BYTES = 4
MAX_NDIM = 255  # the dimension count is one byte
MAX_DIM = 2**32 - 1  # each dimension is a uint32


def parse_idx(
    data: bytes, source: str | Path = "<bytes>", *, ndim: int | None = None
) -> np.ndarray:
    """Decode the bytes of an IDX file (gzip-compressed or not).

    Args:
        data: the file's contents.
        source: the file's name, for error messages.
        ndim: the number of dimensions expected, or None to accept any.

    Returns:
        A writable array in native byte order with the file's shape and dtype.

    Raises:
        DataError: bad gzip data, bad magic number, unknown type code, unexpected number of
            dimensions, or a data length other than the product of the dimensions.
    """
    data = _decompressed(data, source)
    dtype, dims, header_bytes = _read_header(data, source, ndim)
    _check_data_length(data, dtype, dims, header_bytes, source)
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_bytes)
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def _decompressed(data: bytes, source: str | Path) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise _error(source, f"corrupt or truncated gzip data ({e})") from None


def _read_header(
    data: bytes, source: str | Path, ndim: int | None
) -> tuple[np.dtype, tuple[int, ...], int]:
    """The on-disk dtype, the dimensions and the header's length in bytes."""
    if len(data) < MAGIC_BYTES:
        raise _error(source, f"too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise _error(
            source, f"not an IDX file (magic number 0x{data[:4].hex()} does not start with 0x0000)"
        )
    code, file_ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise _error(
            source,
            f"unknown IDX type code 0x{code:02x} (expected one of "
            f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})",
        )
    if file_ndim == 0:
        raise _error(source, "IDX header declares 0 dimensions")
    if ndim is not None and file_ndim != ndim:
        raise _error(source, f"expected {ndim} dimension(s), the header declares {file_ndim}")
    header_bytes = MAGIC_BYTES + DIM_BYTES * file_ndim
    if len(data) < header_bytes:
        raise _error(
            source,
            f"truncated header: {file_ndim} dimensions need {header_bytes} "
            f"bytes, the file has {len(data)}",
        )
    dims = struct.unpack(f">{file_ndim}I", data[MAGIC_BYTES:header_bytes])
    return IDX_DTYPES[code], dims, header_bytes


def _check_data_length(
    data: bytes, dtype: np.dtype, dims: tuple[int, ...], header_bytes: int, source: str | Path
) -> None:
    """The data after the header are exactly the dimensions' product of items, and numpy can
    index an array of that shape."""
    expected, actual = math.prod(dims) * dtype.itemsize, len(data) - header_bytes
    shape = "x".join(map(str, dims))
    if actual < expected:
        raise _error(
            source, f"truncated: shape {shape} needs {expected} data bytes, found {actual}"
        )
    if actual > expected:
        raise _error(source, f"{actual - expected} unexpected bytes after the {shape} data")
    if math.prod(d for d in dims if d) * dtype.itemsize >= np.iinfo(np.intp).max:
        # empty, but numpy refuses a shape whose other dimensions overflow its index type
        raise _error(source, f"shape {shape} is too large for an array")


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (told by its first bytes).

    Args:
        path: the file.
        ndim: the number of dimensions expected, or None to accept any.

    Returns:
        A writable array in native byte order, e.g. uint8 (N, H, W) images or (N,) labels.

    Raises:
        DataError: the file is missing, unreadable or malformed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(path, "file not found") from None
    except OSError as e:
        raise _error(path, f"cannot read ({e.strerror or e})") from None
    return parse_idx(data, path, ndim=ndim)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as an IDX file, gzip-compressed when `path` ends in `.gz`.

    The file is written under a temporary name and renamed into place, so readers never see
    a partial file.

    Args:
        path: the destination.
        array: uint8, int8, int16, int32, float32 or float64, with 1 to 255 dimensions.

    Returns:
        The path written.

    Raises:
        DataError: the dtype or shape cannot be stored in an IDX file.
    """
    path = Path(path)
    array = np.asarray(array)
    code = next(
        (
            c
            for c, dt in IDX_DTYPES.items()
            if (dt.kind, dt.itemsize) == (array.dtype.kind, array.dtype.itemsize)
        ),
        None,
    )
    if code is None:
        raise _error(
            path,
            f"cannot store dtype {array.dtype} in IDX "
            "(use uint8, int8, int16, int32, float32 or float64)",
        )
    if not 1 <= array.ndim <= MAX_NDIM:
        raise _error(path, f"cannot store {array.ndim} dimensions in IDX (1 to {MAX_NDIM})")
    if max(array.shape) > MAX_DIM:
        raise _error(path, f"dimension {max(array.shape)} exceeds the IDX limit {MAX_DIM}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if path.suffix == ".gz":
            # mtime=0 keeps the bytes (and so their checksum) independent of the clock.
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            f.write(header)
            f.write(payload)
    return path


def read_idx_split(
    images_path: str | Path, labels_path: str | Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check an images file and its labels file.

    Args:
        images_path: IDX uint8 (N, H, W).
        labels_path: IDX uint8 (N,).
        num_classes: labels must lie in [0, num_classes).

    Returns:
        images uint8 (N, H, W) and labels int64 (N,).

    Raises:
        DataError: either file is malformed, not uint8, the counts differ, or a label is
            out of range.
    """
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    for path, array in ((images_path, images), (labels_path, labels)):
        if array.dtype != np.uint8:
            raise _error(path, f"holds {array.dtype} data, expected uint8 (type code 0x08)")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    out_of_range = np.flatnonzero(labels >= num_classes)
    if out_of_range.size:
        i = int(out_of_range[0])
        raise _error(
            labels_path,
            f"{out_of_range.size} label(s) out of range 0..{num_classes - 1}"
            f" (first: {labels[i]} at index {i})",
        )
    return images, labels.astype(np.int64)


def _error(source: str | Path, problem: str) -> DataError:
    return DataError(f"{source}: {problem}")
