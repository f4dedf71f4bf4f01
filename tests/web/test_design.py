"""The Design tab's logic without a browser: conversion, reproducible recipes, the board zip
round trip and refusals, on a tiny untrained DDPM checkpoint."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fashiongen.errors import ConfigError
from fashiongen.web.design import (
    RECIPE_FILE,
    Designer,
    Recipe,
    board_zip,
    encode_png,
    mask_from_layers,
    read_board,
)
from fashiongen.web.studio import Studio


@pytest.fixture
def designer(make_checkpoint) -> Designer:
    ddpm = make_checkpoint({"name": "ddpm", "base_width": 8, "num_classes": 10})
    gan = make_checkpoint({"name": "dcgan", "g_width": 8, "d_width": 8})
    return Designer(Studio({"ddpm": ddpm, "gan": gan}))


def sketch() -> Image.Image:
    picture = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(picture).rectangle([40, 120, 240, 200], outline="black", width=12)
    return picture


def recipe(designer: Designer, **changes) -> Recipe:
    array, _ = designer.convert("ddpm", sketch(), use_fill=True)
    fields = {
        "model": "ddpm",
        "mode": "refine",
        "class_name": "7",
        "strength": 0.5,
        "follow": "loosely",
        "seed": 3,
        "num_variations": 2,
        "input_png": encode_png(array),
        **changes,
    }
    return Recipe(**fields)


def test_only_models_that_can_edit_are_offered(designer: Designer) -> None:
    assert designer.editable_keys() == ["ddpm"]


def test_conversion_is_described(designer: Designer) -> None:
    array, line = designer.convert("ddpm", sketch(), use_fill=True)
    assert array.shape == (1, 28, 28)
    assert "inverted" in line and "cropped" in line
    assert array[0, 14, 14] > 100  # the outline was filled
    with pytest.raises(ConfigError, match="draw a garment"):
        designer.convert("ddpm", None, use_fill=True)


def test_a_recipe_reproduces_its_images_through_the_board(designer: Designer, tmp_path) -> None:
    first = designer.run(recipe(designer))
    assert first.images.shape == (2, 1, 28, 28)
    path = tmp_path / "board.zip"
    path.write_bytes(board_zip([first]))
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["design-001.png", RECIPE_FILE]
        assert json.loads(archive.read(RECIPE_FILE))["designs"][0]["recipe"]["seed"] == 3
    (loaded,) = read_board(path)
    assert loaded == first.recipe
    again = designer.run(loaded)
    assert np.array_equal(again.images.numpy(), first.images.numpy())


def test_inpainting_a_recipe_keeps_the_unmasked_pixels(designer: Designer) -> None:
    mask = np.zeros((1, 28, 28), dtype=bool)
    mask[0, 9:19, 9:19] = True
    base = recipe(designer, mode="inpaint", mask_png=encode_png(mask), strength=1.0)
    design = designer.run(base)
    original = designer._input(base, (1, 28, 28))
    kept = ((original + 1) * 127.5).round().to(design.images.dtype)
    assert np.array_equal(design.images[0, :, ~mask[0]].numpy(), kept[0, :, ~mask[0]].numpy())


def test_mask_from_brush_layers() -> None:
    layer = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle([0, 0, 139, 279], fill=(255, 0, 0, 255))
    mask = mask_from_layers([layer], (28, 28))
    assert mask.shape == (1, 28, 28) and mask[0, :, :14].all() and not mask[0, :, 14:].any()
    assert mask_from_layers([Image.new("RGBA", (280, 280))], (28, 28)) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": 0.0}, "strength must lie"),
        ({"num_variations": 99}, "number of variations"),
        ({"follow": "tightly"}, "follow must be"),
        ({"mode": "inpaint"}, "needs a mask"),
        ({"input_png": "not png"}, "not a base64 PNG"),
        ({"model": "gan"}, "cannot edit images"),
    ],
)
def test_bad_recipes_are_refused(designer: Designer, changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        designer.run(recipe(designer, **changes))


def test_a_bad_board_is_refused(tmp_path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a design board zip"):
        read_board(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(RECIPE_FILE, json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="is not a fashiongen-design-board"):
        read_board(path)
