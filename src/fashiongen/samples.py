"""Sample sets on disk and the classes they are drawn for: one format, written and read here.

`save_samples` writes uint8 images by the target's form (`x.png` a grid, `x.npz` arrays with
optional `labels` and `class_names`, `dir/` a folder of `00012_sneaker.png` files, written
batch by batch by `write_png_folder`); `read_samples` reads them back, and the folders of
`fashiongen synth` (`load_synthetic`), so that `fashiongen eval` can score them. Each output
appears whole or not at all (`fashiongen.files`). Classes: `class_names_of` a checkpoint,
`normalise_name` (the one spelling rule: `T-shirt/top` -> `tshirttop`), `parse_classes`
(names, case- and punctuation-insensitive, or ids) and `class_labels`, the one way a list of
labels is built (cycling through classes, or one grid row per class).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image

from fashiongen.data.idx import read_idx_split
from fashiongen.data.sources import SPLIT_FILES, find_idx_files
from fashiongen.errors import ConfigError, DataError
from fashiongen.files import atomic_path, staged_folder
from fashiongen.images import save_grid, to_pil

if TYPE_CHECKING:
    from fashiongen.checkpoint import Checkpoint

SampleForm = Literal["grid", "npz", "folder"]
MANIFEST = "synth.json"
MANIFEST_FORMAT = "fashiongen-synth/1"
GREY_MODES = frozenset({"1", "L", "I", "I;16", "F"})
# Common short forms of Fashion-MNIST's names.
CLASS_ALIASES = (("tshirt", "tshirttop"), ("top", "tshirttop"), ("boot", "ankleboot"))


# ---------------------------------------------------------------- classes


def normalise_name(name: str) -> str:
    """Lower case letters and digits only: `T-shirt/top` -> `tshirttop`."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_names_of(checkpoint: Checkpoint) -> list[str]:
    """The class names recorded at training time (ids as strings if none were)."""
    names = json.loads(checkpoint.metadata.get("extra", "{}")).get("class_names")
    return list(names or [str(i) for i in range(checkpoint.config.model.num_classes)])


def parse_classes(requested: list[str], class_names: list[str]) -> list[int]:
    """['sneaker', '9'] -> [7, 9]; unknown names raise ConfigError listing the choices."""
    lookup = {normalise_name(n): i for i, n in enumerate(class_names)}
    for alias, full in CLASS_ALIASES:
        if full in lookup:
            lookup.setdefault(alias, lookup[full])
    ids = []
    for item in requested:
        for part in item.split(","):
            key = normalise_name(part)
            if key.isdigit() and int(key) < len(class_names):
                ids.append(int(key))
            elif key in lookup:
                ids.append(lookup[key])
            else:
                raise ConfigError(f"unknown class {part!r}; choose from: {', '.join(class_names)}")
    return ids


def class_labels(
    class_ids: Sequence[int], num_samples: int, *, one_row_per_class: bool = False
) -> torch.Tensor:
    """int64 labels drawn from `class_ids` (at least one).

    Cycling (`0, 1, ..., K-1, 0, ...`), exactly `num_samples` of them; or, for a grid with
    `one_row_per_class`, `num_samples // len(class_ids)` (at least 1) of each id in turn.
    """
    ids = torch.tensor(list(class_ids), dtype=torch.int64)
    if one_row_per_class:
        return ids.repeat_interleave(max(1, num_samples // len(ids)))
    return ids[torch.arange(num_samples) % len(ids)]


def balanced_labels(num_samples: int, num_classes: int) -> torch.Tensor | None:
    """0, 1, ..., K-1, 0, 1, ...: every class within one sample of N / K; None if K == 0."""
    if not num_classes:
        return None
    return class_labels(range(num_classes), num_samples)


def class_slug(label: int, class_names: list[str]) -> str:
    """A sortable class-folder name: `0_t-shirt-top` ... `9_ankle-boot` (ids zero-padded)."""
    width = len(str(max(0, len(class_names) - 1)))
    slug = re.sub(r"[^a-z0-9]+", "-", class_names[label].lower()).strip("-")
    return f"{label:0{width}d}_{slug}" if slug else f"{label:0{width}d}"


# ---------------------------------------------------------------- writing


def output_form(out: str | Path) -> SampleForm:
    """How `out` is written: `x.png` a grid, `x.npz` arrays, `dir/` (or no suffix) PNGs."""
    path = Path(out)
    if path.suffix.lower() == ".png":
        return "grid"
    if path.suffix.lower() == ".npz":
        return "npz"
    if str(out).endswith(("/", "\\")) or path.is_dir() or not path.suffix:
        return "folder"
    raise ConfigError(
        f"cannot tell how to write {path}: use a .png grid, a .npz file, or a folder/"
    )


def save_samples(
    out: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    class_names: list[str] | None = None,
    num_rows: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write uint8 images by the target's form: `x.png` a grid, `x.npz` arrays, `dir/` PNGs;
    each appears whole or not at all, and an existing `out` is refused unless `overwrite`."""
    form = output_form(out)
    out = Path(out)
    if form == "grid":
        return save_grid(out, images, num_rows=num_rows, overwrite=overwrite)
    if form == "npz":
        with atomic_path(out, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
            arrays = {"images": images.numpy()}
            if labels is not None:
                arrays["labels"] = labels.cpu().numpy().astype(np.int64)
            if class_names:
                arrays["class_names"] = np.array(class_names)
            np.savez_compressed(f, **arrays)
        return out
    return write_png_folder(
        out,
        [(images, labels)],
        num_images=len(images),
        class_names=class_names,
        overwrite=overwrite,
    )


def write_png_folder(
    out: str | Path,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    num_images: int,
    class_names: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `num_images` uint8 images, in batches, as `00000_<class>.png` ... into a folder
    that appears whole once every image is written (`fashiongen.files.staged_folder`)."""
    out = Path(out)
    width = max(5, len(str(num_images - 1)))  # names sort in drawing order
    with staged_folder(out, overwrite=overwrite) as tmp:
        index = 0
        for images, labels in batches:
            for i, image in enumerate(images):
                label = (
                    ""
                    if labels is None
                    else f"_{normalise_name(class_names[int(labels[i])])}"
                    if class_names
                    else f"_{int(labels[i])}"
                )
                # Plain writes: the whole folder is renamed into place once complete.
                to_pil(image.permute(1, 2, 0).numpy()).save(
                    tmp / f"{index:0{width}d}{label}.png", format="PNG"
                )
                index += 1
    return out


# ---------------------------------------------------------------- reading


@dataclass
class SampleSet:
    """Images read from disk, with the labels they were generated for, if recorded.

    Attributes:
        images: uint8 (N, C, H, W) in [0, 255].
        labels: int64 (N,) class ids, or None.
        class_names: names of the class ids, if recorded.
        source: the path read.
        notes: what a reader should know (e.g. why labels are missing).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def read_samples(path: str | Path, *, class_names: list[str] | None = None) -> SampleSet:
    """Read a sample set: an `.npz` file, a synthetic dataset folder, or a folder of PNGs.

    Args:
        path: an `.npz` holding uint8 `images` (N, C, H, W) and optionally int `labels` (N,)
            and `class_names`; a folder written by `write_synthetic_dataset` (its train
            split is read); or a folder of PNGs, flat (`00012_sneaker.png`, as `fashiongen
            sample --out dir/` writes them) or in class sub-folders (`7_sneaker/x.png`).
        class_names: to turn class names in PNG file or folder names into ids.

    Raises:
        DataError: the path is missing, unreadable, or holds no images in a known form.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such sample file or folder: {path}")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(
                f"cannot read samples from {path}: expected an .npz file or a folder of PNG images"
            )
        return _read_npz(path)
    if (path / MANIFEST).is_file():
        return load_synthetic(path, "train")
    return _read_png_folder(path, class_names)


def _label_of(text: str, class_names: list[str] | None) -> int | None:
    """A class id from a file or folder name part: `3`, `3_dress`, `dress`; else None."""
    head = text.split("_", 1)[0]
    if head.isdigit():
        return int(head)
    if class_names:
        lookup = {normalise_name(n): i for i, n in enumerate(class_names)}
        return lookup.get(normalise_name(text))
    return None


def _read_npz(path: Path) -> SampleSet:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz file ({e})") from None
    if "images" not in arrays:
        raise DataError(f"{path} holds no 'images' array (found: {', '.join(arrays) or 'none'})")
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise DataError(
            f"{path}: 'images' must be uint8 (N, C, H, W) with C in 1, 3, 4; got "
            f"{images.dtype} {images.shape}"
        )
    labels = None
    if "labels" in arrays:
        raw = arrays["labels"]
        if raw.shape != (len(images),) or not np.issubdtype(raw.dtype, np.integer):
            raise DataError(
                f"{path}: 'labels' must be {len(images)} integers, got {raw.dtype} {raw.shape}"
            )
        labels = torch.from_numpy(raw.astype(np.int64))
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    return SampleSet(torch.from_numpy(np.ascontiguousarray(images)), labels, names, str(path))


def _png_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")
    )


def _read_png_folder(folder: Path, class_names: list[str] | None) -> SampleSet:
    files = _png_files(folder)
    labels: list[int | None]
    notes = []
    if files:  # flat: labels from the file-name suffix, `00012_sneaker.png`
        labels = [
            _label_of(f.stem.split("_", 1)[1], class_names) if "_" in f.stem else None
            for f in files
        ]
    else:  # class sub-folders
        subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        files, labels = [], []
        for sub in subdirs:
            found = _png_files(sub)
            files += found
            labels += [_label_of(sub.name, class_names)] * len(found)
    if not files:
        raise DataError(f"no PNG images in {folder} or its sub-folders (nor a checkpoint)")
    pictures = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                grey = image.mode in GREY_MODES
                pictures.append(np.asarray(image.convert("L" if grey else "RGB")))
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{file} is not a readable image ({e})") from None
    shapes = {p.shape for p in pictures}
    if len(shapes) > 1:
        raise DataError(
            f"the PNGs in {folder} differ in size or colour ({len(shapes)} shapes, "
            f"e.g. {sorted(shapes)[:2]}); evaluate images of one shape"
        )
    stacked = np.stack(pictures)
    images = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    label_tensor = None
    if all(label is not None for label in labels):
        label_tensor = torch.tensor(labels, dtype=torch.int64)
    elif any(label is not None for label in labels):
        notes.append("some file names carry no class: labels ignored")
    return SampleSet(
        torch.from_numpy(np.ascontiguousarray(images)),
        label_tensor,
        class_names,
        str(folder),
        notes,
    )


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """`synth.json` of a synthetic dataset folder, or None if absent."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} is not a fashiongen synthetic-dataset manifest")
    return manifest


def load_synthetic(folder: str | Path, split: str = "train") -> SampleSet:
    """One split of a folder written by `write_synthetic_dataset`, in any of its formats.

    Folders without `synth.json` are recognised by their files (four IDX files, `train.npz`,
    or `train/` of class folders), so a hand-made labelled set works too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no such synthetic dataset folder: {folder}")
    manifest = read_manifest(folder) or {}
    names = manifest.get("class_names")
    idx_files = find_idx_files(folder)
    if idx_files is not None:
        images_stem, labels_stem = SPLIT_FILES[split]
        images, labels = read_idx_split(idx_files[images_stem], idx_files[labels_stem], 256)
        return SampleSet(
            torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), names, str(folder)
        )
    if (folder / f"{split}.npz").is_file():
        found = _read_npz(folder / f"{split}.npz")
    elif (folder / split).is_dir():
        found = _read_png_folder(folder / split, names)
    else:
        raise DataError(
            f"{folder} holds no synthetic dataset (expected {MANIFEST} with IDX "
            f"files, {split}.npz or {split}/ class folders)"
        )
    if found.labels is None:
        raise DataError(f"{found.source} has no labels; a labelled dataset is needed")
    found.class_names = found.class_names or names
    return found
