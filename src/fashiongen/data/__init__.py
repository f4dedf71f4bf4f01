"""The data layer: every dataset as one in-memory split of uint8 images and int64 labels.

`load_dataset(name, split)` is the single entry point. Names: "fashion-mnist" and "mnist"
(IDX files, found locally or downloaded, see `sources`), "synthetic" (drawn in code, see
`synthetic`) and "folder:PATH" (class folders of PNG/JPEG files, see `folder`). Whatever the
source, `image_size` and `channels` bring the images to one shape, so a model trained on one
dataset can be fed any other. Nothing here touches the network or the disk at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fashiongen.data.dataset import ImageDataset, check_shape_args, convert_images, dataset_info
from fashiongen.data.folder import FOLDER_PREFIX, load_folder
from fashiongen.data.sources import SOURCES, load_idx_dataset
from fashiongen.data.synthetic import make_synthetic
from fashiongen.errors import DataError

if TYPE_CHECKING:
    from fashiongen.config import DataConfig

DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "synthetic")  # and "folder:PATH"
SPLITS: tuple[str, ...] = ("train", "test")

__all__ = [
    "DATASETS",
    "FOLDER_PREFIX",
    "SPLITS",
    "ImageDataset",
    "dataset_info",
    "load_dataset",
    "load_from_config",
]


def load_dataset(
    name: str = "fashion-mnist",
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = True,
) -> ImageDataset:
    """Load one split of a dataset into memory.

    Args:
        name: one of `DATASETS`, or "folder:PATH".
        split: "train" or "test".
        data_dir: for IDX datasets, the directory holding the four files (or a `<name>`
            sub-directory of them); searched before anything else.
        image_size: side of the square images to return; None keeps the native size.
        channels: 1 or 3; None keeps the native channels.
        download: for IDX datasets found nowhere, download them into the user cache.

    Returns:
        uint8 (N, C, H, W) images in [0, 255] and int64 (N,) labels.

    Raises:
        DataError: unknown name or split, missing or malformed files, or a failed download.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose train or test")
    check_shape_args(image_size, channels)
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise DataError("folder: needs a path, e.g. folder:/data/my-images")
        return load_folder(path, split, image_size=image_size, channels=channels)
    if name == "synthetic":
        ds = make_synthetic(split, image_size=image_size)
    elif name in SOURCES:
        ds = load_idx_dataset(name, split, data_dir=data_dir, download=download)
    else:
        raise DataError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or {FOLDER_PREFIX}PATH"
        )
    ds.images = convert_images(ds.images, image_size, channels)
    return ds


def load_from_config(data_cfg: DataConfig, split: str = "train") -> ImageDataset:
    """`load_dataset` with the fields of a `DataConfig`."""
    return load_dataset(
        data_cfg.name,
        split,
        data_dir=data_cfg.data_dir,
        image_size=data_cfg.image_size,
        channels=data_cfg.channels,
    )
