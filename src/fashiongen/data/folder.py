"""Datasets from folders of images: one sub-folder of PNG or JPEG files per class.

`folder:PATH` names a directory whose sub-folders are the classes; labels follow the sorted
folder names. If PATH has `train/` and `test/` sub-folders, each holds its split's class
folders; otherwise every 10th file of each class, by sorted name, belongs to the test split.
All images take one size, `image_size` (square; non-square images are centre-cropped, then
resized) or else the first image's own, and one channel count, `channels` or else 3 if any
image is colour and 1 otherwise. Both are decided over the whole dataset, so train and test
agree. Unreadable files, and images of another size when no image_size is given, are reported
together in one DataError. A split is decoded once, straight into one uint8 tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashiongen.data.dataset import GREY, RGB, ImageDataset, resize_image
from fashiongen.errors import DataError

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
TEST_EVERY_N_FILES = 10
SPLIT_DIRS = ("train", "test")
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Pillow reports broken files as OSError (incl. UnidentifiedImageError), ValueError or, for
# some broken PNG chunks, SyntaxError.
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

_Item = tuple[Path, int]  # an image file and its label


def load_folder(
    path: str | Path, split: str, *, image_size: int | None = None, channels: int | None = None
) -> ImageDataset:
    """Load one split of a folder dataset.

    Args:
        path: the dataset directory (class folders, or train/ and test/ of class folders).
        split: "train" or "test".
        image_size: side of the square output, or None for the first image's size.
        channels: 1 or 3, or None for 3 if any image is colour, else 1.

    Returns:
        uint8 (N, C, H, W) images; `name` is "folder:" and the absolute path.

    Raises:
        DataError: no class folders or images, unreadable files, or mixed sizes without
            `image_size`.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"folder dataset {root} is not a directory")
    try:
        class_names, files = _list_files(root)
    except OSError as e:
        raise DataError(f"cannot list folder dataset {root} ({e.strerror or e})") from None
    every = files["train"] + files["test"]
    if not every:
        raise DataError(f"no PNG or JPEG images in the class folders of {root}")

    headers, problems = _read_headers(every)
    if not headers:
        raise _problems_error(root, problems, every)
    size = _output_size(headers, every, image_size, problems)
    if channels is None:
        channels = RGB if any(mode not in GREY_MODES for mode, _ in headers.values()) else GREY
    if problems:
        raise _problems_error(root, problems, every)

    items = files[split]
    if not items:
        raise DataError(f"folder dataset {root} has no {split} images")
    out = _decode(items, size, channels, problems)
    if problems:
        raise _problems_error(root, problems, every)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return ImageDataset(
        images=torch.from_numpy(out),
        labels=labels,
        class_names=class_names,
        name=f"{FOLDER_PREFIX}{root}",
        split=split,
        source=str(root),
    )


def _read_headers(
    every: list[_Item],
) -> tuple[dict[Path, tuple[str, tuple[int, int]]], dict[Path, str]]:
    """Each file's (mode, (width, height)), read without decoding the pixels, and the
    problems of the files that could not be read."""
    problems: dict[Path, str] = {}
    headers = {}
    for file, _ in every:
        try:
            with Image.open(file) as image:
                headers[file] = (image.mode, image.size)
        except READ_ERRORS as e:
            problems[file] = _describe(e)
    return headers, problems


def _output_size(
    headers: dict[Path, tuple[str, tuple[int, int]]],
    every: list[_Item],
    image_size: int | None,
    problems: dict[Path, str],
) -> tuple[int, int]:
    """(width, height) of the output: `image_size` square, or else the first readable image's,
    with every image of another size added to `problems`."""
    first = next(file for file, _ in every if file in headers)
    size = (image_size, image_size) if image_size else headers[first][1]
    if image_size is None:
        for file, (_, file_size) in headers.items():
            if file_size != size:
                problems[file] = (
                    f"size {file_size[0]}x{file_size[1]} differs from {first.name}'s "
                    f"{size[0]}x{size[1]}"
                )
    return size


def _decode(
    items: list[_Item], size: tuple[int, int], channels: int, problems: dict[Path, str]
) -> np.ndarray:
    """uint8 (N, C, H, W): the files converted to `channels` and resized to `size`; a file
    that fails to decode is added to `problems` and its slot left unfilled."""
    width, height = size
    out = np.empty((len(items), channels, height, width), dtype=np.uint8)
    for i, (file, _) in enumerate(items):
        try:
            with Image.open(file) as image:
                picture = np.asarray(resize_image(_to_mode(image, channels), size))
        except READ_ERRORS as e:
            problems[file] = _describe(e)
            continue
        out[i] = picture.reshape(height, width, channels).transpose(2, 0, 1)
    return out


def _list_files(root: Path) -> tuple[list[str], dict[str, list[_Item]]]:
    """Class names and each split's (file, label) pairs, in sorted order."""
    files: dict[str, list[_Item]] = {split: [] for split in SPLIT_DIRS}
    if all((root / split).is_dir() for split in SPLIT_DIRS):
        class_dirs = {split: _class_dirs(root / split) for split in SPLIT_DIRS}
        class_names = sorted(set().union(*class_dirs.values()))
        label_of = {name: label for label, name in enumerate(class_names)}
        for split, dirs in class_dirs.items():
            files[split] = [(f, label_of[name]) for name, d in dirs.items() for f in _images(d)]
    else:
        class_dirs = _class_dirs(root)
        class_names = list(class_dirs)
        for label, directory in enumerate(class_dirs.values()):
            for i, file in enumerate(_images(directory)):
                is_test = i % TEST_EVERY_N_FILES == TEST_EVERY_N_FILES - 1
                files["test" if is_test else "train"].append((file, label))
    if not class_names:
        raise DataError(
            f"folder dataset {root} has no class sub-folders "
            "(expected one folder of images per class)"
        )
    return class_names, files


def _class_dirs(directory: Path) -> dict[str, Path]:
    return {
        p.name: p for p in sorted(directory.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }


def _images(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """A decoded image in mode "L" or "RGB"; transparent pixels become black."""
    if image.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image)
    return image.convert("L" if channels == GREY else "RGB")


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _problems_error(root: Path, problems: dict[Path, str], every: list[_Item]) -> DataError:
    order = {file: i for i, (file, _) in enumerate(every)}
    first = min(problems, key=lambda file: order.get(file, len(order)))
    todo = (
        "set data.image_size to resize every image"
        if problems[first].startswith("size ")
        else "fix or remove them"
    )
    return DataError(
        f"{len(problems)} of {len(every)} image files in {root} cannot be used "
        f"(first: {first}: {problems[first]}); {todo}"
    )
