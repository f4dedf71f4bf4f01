"""Folder datasets: class folders of PNG/JPEG images, generated on the fly with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashiongen.data import dataset_info, load_dataset
from fashiongen.data.folder import load_folder
from fashiongen.errors import DataError


def _grey(value: int, size: tuple[int, int] = (20, 20)) -> Image.Image:
    return Image.new("L", size, value)


def _rgb(colour: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> Image.Image:
    return Image.new("RGB", size, colour)


def make_folder(root: Path, classes: dict[str, list[Image.Image]], fmt: str = "png") -> Path:
    """One sub-folder per class, images saved as 000.png, 001.png, ..."""
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(root / name / f"{i:03d}.{fmt}")
    return root


def test_grey_png_native_size_and_split(tmp_path: Path) -> None:
    # 12 "bag" images (values 0..11) and 10 "coat" images: every 10th file is test.
    root = make_folder(
        tmp_path / "ds",
        {"coat": [_grey(100 + i) for i in range(10)], "bag": [_grey(i) for i in range(12)]},
    )
    train = load_dataset(f"folder:{root}", "train")
    test = load_dataset(f"folder:{root}", "test")
    assert train.class_names == ["bag", "coat"]  # sorted folder names
    assert train.name == f"folder:{root.resolve()}"
    assert train.images.shape == (20, 1, 20, 20)
    assert train.images.dtype == torch.uint8
    assert test.images.shape == (2, 1, 20, 20)
    assert test.labels.tolist() == [0, 1]
    assert test.images[:, 0, 0, 0].tolist() == [9, 109]  # the 10th file of each class
    assert 9 not in train.images[:, 0, 0, 0].tolist()
    assert train.labels.tolist() == [0] * 11 + [1] * 9


def test_rgb_jpeg_defaults_to_three_channels(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "ds",
        {"red": [_rgb((250, 0, 0))] * 3, "blue": [_rgb((0, 0, 250))] * 3},
        fmt="jpg",
    )
    ds = load_folder(root, "train")
    assert ds.image_shape == (3, 20, 20)
    red = ds.images[ds.labels == ds.class_names.index("red")].float().mean(dim=(0, 2, 3))
    assert red[0] > 200
    assert red[2] < 50


def test_one_colour_image_makes_the_dataset_rgb(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": [_grey(10)] * 4, "b": [_grey(20)] * 3})
    _rgb((1, 2, 3)).save(root / "b" / "zz.png")
    assert load_folder(root, "train").image_shape == (3, 20, 20)
    assert load_folder(root, "train", channels=1).image_shape == (1, 20, 20)


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_resize_and_channels(tmp_path: Path, image_size: int, channels: int) -> None:
    root = make_folder(
        tmp_path / "ds", {"a": [_grey(200, (28, 28))] * 3, "b": [_rgb((0, 255, 0), (40, 30))] * 3}
    )
    ds = load_dataset(f"folder:{root}", image_size=image_size, channels=channels)
    assert ds.images.shape == (6, channels, image_size, image_size)
    assert (ds.images[ds.labels == 0] == 200).all()  # flat images stay flat under resizing
    if channels == 3:
        assert ds.images[ds.labels == 1][:, 1].min() == 255
    else:
        assert ds.images[ds.labels == 1].unique().tolist() == [150]  # Pillow's luma of green


def test_train_test_subfolders(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds" / "train", {"x": [_grey(1)] * 3, "y": [_grey(2)] * 2})
    make_folder(tmp_path / "ds" / "test", {"y": [_grey(2)], "z": [_grey(3)] * 2})
    train = load_folder(tmp_path / "ds", "train")
    test = load_folder(tmp_path / "ds", "test")
    assert train.class_names == test.class_names == ["x", "y", "z"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1]
    assert test.labels.tolist() == [1, 2, 2]
    assert test.images[:, 0, 0, 0].tolist() == [2, 3, 3]


def test_transparent_pixels_become_black(tmp_path: Path) -> None:
    image = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    image.putpixel((0, 0), (255, 255, 255, 255))
    root = make_folder(tmp_path / "ds", {"a": [image]})
    ds = load_folder(root, "train", channels=1)
    assert ds.images[0, 0, 0, 0] == 255
    assert ds.images[0, 0, 1:, 1:].max() == 0


def test_sixteen_bit_grey(tmp_path: Path) -> None:
    image = Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16))
    root = make_folder(tmp_path / "ds", {"a": [image]})
    ds = load_folder(root, "train")
    assert ds.image_shape == (1, 6, 6)
    assert (ds.images == 255).all()


def test_unreadable_files_are_counted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": [_grey(1)] * 3, "b": [_grey(2)] * 3})
    (root / "a" / "001.png").write_bytes(b"not a png")
    truncated = root / "b" / "002.png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    (root / "b" / "notes.txt").write_text("ignored: not an image suffix")
    with pytest.raises(DataError, match=r"^2 of 6 image files .* cannot be used") as error:
        load_folder(root, "train")
    message = str(error.value)
    assert str(root / "a" / "001.png") in message
    assert "\n" not in message


def test_odd_sizes_need_an_image_size(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "ds",
        {"a": [_grey(1, (20, 20))] * 2, "b": [_grey(2, (20, 20)), _grey(2, (24, 20))]},
    )
    with pytest.raises(DataError, match="1 of 4 .*001.png: size 24x20 differs") as error:
        load_folder(root, "train")
    assert "\n" not in str(error.value)
    assert load_folder(root, "train", image_size=16).image_shape == (1, 16, 16)


@pytest.mark.parametrize("layout", ["empty", "no class folders", "no images"])
def test_empty_folders(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    if layout == "no class folders":
        _grey(1).save(root / "loose.png")
    elif layout == "no images":
        (root / "a").mkdir()
        (root / "a" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no class sub-folders|no PNG or JPEG images") as error:
        load_dataset(f"folder:{root}")
    assert str(root) in str(error.value)


def test_missing_folder_and_empty_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("folder:")
    root = make_folder(tmp_path / "ds", {"a": [_grey(1)] * 3})
    with pytest.raises(DataError, match="no test images"):
        load_folder(root, "test")


def test_dataset_info_of_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"black": [_grey(0)] * 2, "white": [_grey(255)] * 2})
    info = dataset_info(load_folder(root, "train"))
    assert info["class_counts"] == {"black": 2, "white": 2}
    assert info["pixel_mean"] == pytest.approx(0.5)
    assert info["pixel_std"] == pytest.approx(0.5)
    assert info["shape"] == [1, 20, 20]
