"""Fuzzing the parsers of untrusted input: `--set` overrides and TOML configs raise only
ConfigError; image folders of arbitrary or mutated bytes raise only DataError (or load).

The IDX reader's fuzz tests live with its unit tests (tests/unit/test_data_idx.py); here a
whole dataset directory with one damaged file goes through `load_dataset`.
"""

from __future__ import annotations

import io
import itertools
import struct
import tomllib
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fashiongen.config import (
    DataConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    config_from_dict,
    merge_overrides,
    read_toml,
)
from fashiongen.data import load_dataset
from fashiongen.data.folder import load_folder
from fashiongen.data.sources import write_idx_split
from fashiongen.errors import ConfigError, DataError
from fashiongen.models import MODELS

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()
T = TypeVar("T")


def _fresh_dir(tmp_path: Path) -> Path:
    """A new folder per example (function-scoped fixtures are shared across examples)."""
    path = tmp_path / f"ex{next(_counter)}"
    path.mkdir()
    return path


# ---------------------------------------------------------------- config


def _field_names(cls: type) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


KNOWN_KEYS = (
    [f"train.{k}" for k in _field_names(TrainConfig)]
    + [f"data.{k}" for k in _field_names(DataConfig)]
    + [f"sample.{k}" for k in _field_names(SampleConfig)]
    + [f"model.{k}" for cls in {m.Config for m in MODELS.values()} for k in _field_names(cls)]
    + ["seed", "out_dir", "model", "train", "model.gan.name", "model.gan"]
)
_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "none",
            "null",
            "nan",
            "inf",
            "-inf",
            '""',
            "[]",
            "{}",
            "[1, 2]",
            "[0.5, 0.9]",
            '"ddim"',
            "dcgan",
            "vae",
            "1e999",
            "{a = 1}",
            "[[[[[[1]]]]]]",
            "0x10",
            "1_000",
            '"\\u0000"',
        ]
    ),
    st.text(max_size=20),
)
_overrides = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KNOWN_KEYS), _scalars),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=15), _scalars),
)


def _outcome(build: Callable[[], T], error: type[Exception]) -> T | Exception:
    """What `build` gives: its value, or its `error` (any other exception propagates)."""
    try:
        return build()
    except error as e:
        return e


def _build_config(overrides: list[str]) -> RunConfig | Exception:
    outcome = _outcome(lambda: config_from_dict(merge_overrides({}, overrides)), ConfigError)
    assert isinstance(outcome, RunConfig) or "\n" not in str(outcome), str(outcome)
    return outcome


@FUZZ
@given(st.lists(_overrides, max_size=4))
@example(["model=3"])
@example(["train.lr=1e999"])
@example(["seed=1" + "0" * 30])
@example(["train.lr=" + "[" * 2000])
@example(["model.name=[1]", "model.gan=1"])
def test_fuzz_overrides_raise_only_config_error(overrides):
    _build_config(overrides)


_toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["name", "lr", "x"]), inner, max_size=3),
    ),
    max_leaves=6,
)
_sections = st.sampled_from(["model", "data", "train", "sample", "model.gan", "seed", "junk"])


def _toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"


_toml_texts = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.tuples(_sections, st.sampled_from(KNOWN_KEYS + ["name", "lr", "epochs"]), _toml_values),
        max_size=6,
    ).map(
        lambda rows: "\n".join(
            f"[{s}]\n{k.split('.')[-1]} = {_toml_literal(v)}" for s, k, v in rows
        )
    ),
)


@FUZZ
@given(_toml_texts)
@example("model = 3\n")
@example("[model]\nname = 3\n")
@example("v = " + "[" * 5000)
@example("[train]\nlr = inf\n")
def test_fuzz_toml_raises_only_config_error(tmp_path, text):
    path = _fresh_dir(tmp_path) / "c.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome = _outcome(lambda: config_from_dict(read_toml(path)), ConfigError)
    assert isinstance(outcome, RunConfig) or "\n" not in str(outcome)


def test_toml_fuzzer_writes_valid_toml():
    """The structured half of the fuzzer really reaches the config builder."""
    text = "[train]\nlr = " + _toml_literal(1e-3) + "\n[model]\nname = " + _toml_literal("vae")
    assert tomllib.loads(text) == {"train": {"lr": 1e-3}, "model": {"name": "vae"}}


# ---------------------------------------------------------------- image folders


def _image_bytes(fmt: str, size: tuple[int, int], mode: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[::-1]))
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


VALID = [
    _image_bytes(fmt, size, mode)
    for fmt, size, mode in [
        ("PNG", (8, 8), "L"),
        ("PNG", (8, 8), "RGBA"),
        ("PNG", (6, 9), "P"),
        ("PNG", (8, 8), "I;16"),
        ("JPEG", (8, 8), "L"),
        ("JPEG", (8, 8), "RGB"),
        ("PNG", (8, 8), "1"),
        ("PNG", (8, 8), "LA"),
    ]
]


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header (with a valid CRC) claims width x height pixels."""
    data = bytearray(_image_bytes("PNG", (8, 8), "L"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def _mutate(data: bytes, cuts: list[tuple[int, int]], truncate: int | None) -> bytes:
    buffer = bytearray(data)
    for position, value in cuts:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:truncate] if truncate is not None else buffer)


_image_files = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(VALID),
    st.builds(
        _mutate,
        st.sampled_from(VALID),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        st.one_of(st.none(), st.integers(0, 200)),
    ),
    st.binary(max_size=100).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=100).map(lambda b: b"\xff\xd8\xff\xe0" + b),
)


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([".png", ".jpg"]), _image_files),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([None, 8]),
)
@example([("a", ".png", _png_claiming(30_000, 30_000))], None)  # a decompression bomb
@example([("a", ".png", _png_claiming(9_000, 9_000))], 8)  # large, below the bomb limit
def test_fuzz_image_folder_raises_only_data_error(tmp_path, files, image_size):
    root = _fresh_dir(tmp_path)
    for i, (label, suffix, data) in enumerate(files):
        (root / label).mkdir(exist_ok=True)
        (root / label / f"{i:03d}{suffix}").write_bytes(data)
    ds = _outcome(lambda: load_folder(root, "train", image_size=image_size), DataError)
    if isinstance(ds, DataError):
        assert "\n" not in str(ds) and str(root) in str(ds)
    else:
        assert ds.images.dtype == torch.uint8 and ds.images.ndim == 4
        assert len(ds) == len(ds.labels) <= len(files)


# ---------------------------------------------------------------- a whole IDX dataset


@FUZZ
@given(
    st.sampled_from(["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
    st.one_of(st.none(), st.integers(0, 400)),
)
def test_fuzz_idx_dataset_raises_only_data_error(tmp_path, name, cuts, truncate):
    root = _fresh_dir(tmp_path)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        write_idx_split(
            root, split, rng.integers(0, 256, (n, 6, 6), dtype=np.uint8), rng.integers(0, 10, n)
        )
    path = root / name
    path.write_bytes(_mutate(path.read_bytes(), cuts, truncate))
    ds = _outcome(lambda: load_dataset("fashion-mnist", "train", data_dir=root), DataError)
    if isinstance(ds, DataError):
        assert "\n" not in str(ds) and str(path) in str(ds)
    else:
        assert ds.images.shape[1:] == (1, 6, 6) and int(ds.labels.max()) < 10


@pytest.mark.parametrize("text", ["", "   ", "\x00", "model.name=dcgan=x", "=1", ".=1", "a..b=1"])
def test_odd_override_strings(text):
    result = _build_config([text])
    assert isinstance(result, RunConfig | ConfigError)
