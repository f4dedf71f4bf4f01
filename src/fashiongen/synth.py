"""Generated images as data: reading sample sets, labelled synthetic datasets, and CAS.

`read_samples` reads what `fashiongen sample` writes (an `.npz` of uint8 images with optional
labels, or a folder of PNGs) so that `fashiongen eval` can score it. `write_synthetic_dataset`
turns a trained model into a labelled dataset on disk, in one of three formats that the data
layer loads back: `idx` (the four standard Fashion-MNIST file names, for `--data-dir DIR`),
`npz` (`train.npz`, `test.npz`) or `png` (`train/` and `test/` of class folders, for
`--data folder:DIR`). Conditional models are asked for balanced classes; unconditional ones
are labelled by the feature network's argmax. `classification_accuracy_score` is the
Classification Accuracy Score of Ravuri & Vinyals (arXiv 1905.10887): the real test accuracy
of a classifier trained only on the synthetic set, beside the same classifier (the metrics'
FeatNet architecture, `fit_featnet`, same epochs and seed) trained on an equal number of real
training images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from fashiongen.errors import ConfigError, DataError

SynthFormat = Literal["idx", "npz", "png"]
SYNTH_FORMATS: tuple[str, ...] = ("idx", "npz", "png")
MANIFEST = "synth.json"
MANIFEST_FORMAT = "fashiongen-synth/1"
TEST_DIVISOR = 6  # the test split holds N // 6 more samples: Fashion-MNIST's 10k to 60k
DEFAULT_CAS_EPOCHS = 5
GREY_MODES = frozenset({"1", "L", "I", "I;16", "F"})


# ---------------------------------------------------------------- sample sets on disk


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


def normalise_name(name: str) -> str:
    """Lower case letters and digits only: `T-shirt/top` -> `tshirttop`."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_slug(label: int, class_names: list[str]) -> str:
    """A sortable class-folder name: `0_t-shirt-top` ... `9_ankle-boot` (ids zero-padded)."""
    width = len(str(max(0, len(class_names) - 1)))
    slug = re.sub(r"[^a-z0-9]+", "-", class_names[label].lower()).strip("-")
    return f"{label:0{width}d}_{slug}" if slug else f"{label:0{width}d}"


def _label_of(text: str, class_names: list[str] | None) -> int | None:
    """A class id from a file or folder name part: `3`, `3_dress`, `dress`; else None."""
    head = text.split("_", 1)[0]
    if head.isdigit():
        return int(head)
    if class_names:
        lookup = {normalise_name(n): i for i, n in enumerate(class_names)}
        return lookup.get(normalise_name(text))
    return None


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
            raise DataError(f"cannot read samples from {path}: expected an .npz file or a "
                            "folder of PNG images")
        return _read_npz(path)
    if (path / MANIFEST).is_file():
        return load_synthetic(path, "train")
    return _read_png_folder(path, class_names)


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
        raise DataError(f"{path}: 'images' must be uint8 (N, C, H, W) with C in 1, 3, 4; got "
                        f"{images.dtype} {images.shape}")
    labels = None
    if "labels" in arrays:
        raw = arrays["labels"]
        if raw.shape != (len(images),) or not np.issubdtype(raw.dtype, np.integer):
            raise DataError(f"{path}: 'labels' must be {len(images)} integers, got {raw.dtype} "
                            f"{raw.shape}")
        labels = torch.from_numpy(raw.astype(np.int64))
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    return SampleSet(torch.from_numpy(np.ascontiguousarray(images)), labels, names, str(path))


def _png_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith("."))


def _read_png_folder(folder: Path, class_names: list[str] | None) -> SampleSet:
    files = _png_files(folder)
    labels: list[int | None]
    notes = []
    if files:  # flat: labels from the file-name suffix, `00012_sneaker.png`
        labels = [_label_of(f.stem.split("_", 1)[1], class_names) if "_" in f.stem else None
                  for f in files]
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
        raise DataError(f"the PNGs in {folder} differ in size or colour ({len(shapes)} shapes, "
                        f"e.g. {sorted(shapes)[:2]}); evaluate images of one shape")
    stacked = np.stack(pictures)
    images = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    label_tensor = None
    if all(label is not None for label in labels):
        label_tensor = torch.tensor(labels, dtype=torch.int64)
    elif any(label is not None for label in labels):
        notes.append("some file names carry no class: labels ignored")
    return SampleSet(torch.from_numpy(np.ascontiguousarray(images)), label_tensor, class_names,
                     str(folder), notes)


# ---------------------------------------------------------------- synthetic datasets


def balanced_labels(num_samples: int, num_classes: int) -> torch.Tensor | None:
    """0, 1, ..., K-1, 0, 1, ...: every class within one sample of N / K; None if K == 0."""
    if not num_classes:
        return None
    return torch.arange(num_samples) % num_classes


def write_synthetic_dataset(checkpoint: str | Path, out_dir: str | Path, *, num_samples: int,
                            fmt: SynthFormat = "idx", seed: int = 0, featnet: Any = None,
                            overwrite: bool = False, log: Callable[[str], None] = print,
                            progress: bool = False) -> dict[str, Any]:
    """Sample a labelled dataset from a model and write it in a format the data layer loads.

    The train split holds `num_samples` images; a test split holds `num_samples // 6` more
    (at least one per class), so IDX and folder loaders find both splits. The whole folder
    is written under a temporary name and renamed into place; its images are held in memory
    meanwhile, so their count is bounded (`fashiongen.limits`).

    Args:
        checkpoint: a checkpoint folder, weights file or run folder.
        out_dir: the dataset folder to create (must not exist, or be empty, unless
            `overwrite`).
        num_samples: training images.
        fmt: "idx" (grey images only; `load_dataset(<model's dataset>, data_dir=out_dir)`),
            "npz" (`train.npz`, `test.npz`, readable by `read_samples`) or "png"
            (`train/<id>_<class>/*.png`, `test/...`; `load_dataset("folder:" + out_dir)`).
        seed: seeds sampling.
        featnet: labels an unconditional model's samples; default `load_featnet` of the
            model's dataset.
        overwrite: replace an existing `out_dir` once the new dataset is complete.
        log: receives progress lines.
        progress: a bar of images drawn, on a terminal.

    Returns:
        The manifest, also written to `out_dir/synth.json`.

    Raises:
        ConfigError: a bad format or count, colour images for IDX, or an unconditional
            model without a feature network.
        OutputExistsError: a non-empty `out_dir`, without `overwrite`.
    """
    from fashiongen import limits
    from fashiongen.checkpoint import load_model
    from fashiongen.device import select_device
    from fashiongen.files import check_free, staged_folder
    from fashiongen.generate import class_names_of, generate

    if fmt not in SYNTH_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(SYNTH_FORMATS)}")
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    out_dir = Path(out_dir)
    check_free(out_dir, overwrite=overwrite, folder=True)  # before the sampling
    model, ckpt = load_model(checkpoint, device=select_device("auto"))
    if fmt == "idx" and model.image_shape[0] != 1:
        raise ConfigError(f"IDX files hold grey images; this model makes {model.image_shape[0]}"
                          "-channel ones: use --format npz or png")
    num_classes = model.num_classes
    notes: list[str] = []
    if num_classes:
        class_names = class_names_of(ckpt)
    else:
        from fashiongen.nets.featnet import load_featnet

        featnet = featnet if featnet is not None else load_featnet(ckpt.config.data.name)
        class_names = list(featnet.class_names)
        notes.append(f"unconditional model: labels are the feature net's predictions (argmax; "
                     f"{featnet.name}, test accuracy {featnet.test_accuracy})")
    num_test = max(num_classes or 1, num_samples // TEST_DIVISOR)
    total = num_samples + num_test
    limits.check_images_fit(total, model.image_shape, hint=" (train and test split together)")
    log(f"sampling {total} images from {ckpt.path} ({ckpt.config.model.name}, step {ckpt.step})")
    requested = balanced_labels(total, num_classes)
    images = generate(model, total, labels=requested, seed=seed, sampling=ckpt.config.sample,
                      progress=progress)
    labels = requested if requested is not None else featnet.logits(images).argmax(1)
    splits = {"train": (images[:num_samples], labels[:num_samples]),
              "test": (images[num_samples:], labels[num_samples:])}

    with staged_folder(out_dir, overwrite=overwrite) as tmp:
        files = _WRITERS[fmt](tmp, splits, class_names)
        manifest = {
            "format": MANIFEST_FORMAT,
            "file_format": fmt,
            "checkpoint": str(ckpt.path),
            "family": ckpt.config.model.name,
            "step": ckpt.step,
            "dataset": ckpt.config.data.name,
            "seed": seed,
            "num_train": num_samples,
            "num_test": num_test,
            "class_names": class_names,
            "labels": "requested" if requested is not None else "featnet",
            "class_counts": torch.bincount(labels[:num_samples],
                                           minlength=len(class_names)).tolist(),
            "files": files,
            "notes": notes,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_idx(folder: Path, splits: dict, class_names: list[str]) -> list[str]:
    from fashiongen.data.sources import write_idx_split

    written = []
    for split, (images, labels) in splits.items():
        paths = write_idx_split(folder, split, images[:, 0].numpy(), labels.numpy())
        written += [p.name for p in paths]
    return written


def _write_npz(folder: Path, splits: dict, class_names: list[str]) -> list[str]:
    from fashiongen.generate import save_samples

    for split, (images, labels) in splits.items():
        save_samples(folder / f"{split}.npz", images, labels, class_names=class_names)
    return [f"{split}.npz" for split in splits]


def _write_png(folder: Path, splits: dict, class_names: list[str]) -> list[str]:
    from fashiongen.images import to_pil

    for split, (images, labels) in splits.items():
        # Every class gets a folder, even an empty one, so folder order gives the class ids.
        for label in range(len(class_names)):
            (folder / split / class_slug(label, class_names)).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            target = folder / split / class_slug(label, class_names)
            # Plain writes: the whole folder is renamed into place once complete.
            to_pil(image.permute(1, 2, 0).numpy()).save(target / f"{i:06d}.png", format="PNG")
    return [f"{split}/" for split in splits]


_WRITERS = {"idx": _write_idx, "npz": _write_npz, "png": _write_png}


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
    from fashiongen.data.idx import read_idx_split
    from fashiongen.data.sources import SPLIT_FILES, find_idx_files

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no such synthetic dataset folder: {folder}")
    manifest = read_manifest(folder) or {}
    names = manifest.get("class_names")
    idx_files = find_idx_files(folder)
    if idx_files is not None:
        images_stem, labels_stem = SPLIT_FILES[split]
        images, labels = read_idx_split(idx_files[images_stem], idx_files[labels_stem], 256)
        return SampleSet(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), names,
                         str(folder))
    if (folder / f"{split}.npz").is_file():
        found = _read_npz(folder / f"{split}.npz")
    elif (folder / split).is_dir():
        found = _read_png_folder(folder / split, names)
    else:
        raise DataError(f"{folder} holds no synthetic dataset (expected {MANIFEST} with IDX "
                        f"files, {split}.npz or {split}/ class folders)")
    if found.labels is None:
        raise DataError(f"{found.source} has no labels; a labelled dataset is needed")
    found.class_names = found.class_names or names
    return found


# ---------------------------------------------------------------- CAS


def classification_accuracy_score(synth_dir: str | Path, *, epochs: int = DEFAULT_CAS_EPOCHS,
                                  seed: int = 0, dataset: str | None = None,
                                  data_dir: str | Path | None = None,
                                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """CAS (Ravuri & Vinyals, arXiv 1905.10887): train on synthetic, test on real.

    Two classifiers of the same architecture (the metrics' FeatNet: four 3x3 conv layers and
    a 128-d feature layer), trained by `fit_featnet` with the same epochs, seed and
    augmentation, one on the synthetic train split, one on as many real training images
    (a seeded random subset), are both scored on the full real test split.

    Args:
        synth_dir: a folder from `write_synthetic_dataset` (any format).
        epochs: training epochs of each classifier.
        seed: seeds both trainings and the real subset.
        dataset: the real dataset; default the one the model was trained on (from the
            manifest), else "fashion-mnist".
        data_dir: where that dataset's files are, as for `load_dataset`.
        log: receives per-epoch progress lines.

    Returns:
        `cas` (synthetic-trained accuracy), `real_accuracy`, `ratio` (cas / real_accuracy),
        counts, epochs, seed, the classifier's description and `notes`.
    """
    from fashiongen.data import load_dataset
    from fashiongen.metrics.featnet_training import NO_FLIP_DATASETS, accuracy, fit_featnet

    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    synth = load_synthetic(synth_dir, "train")
    manifest = read_manifest(synth_dir) or {}
    dataset = dataset or manifest.get("dataset") or "fashion-mnist"
    real_train = load_dataset(dataset, "train", data_dir=data_dir)
    real_test = load_dataset(dataset, "test", data_dir=data_dir)
    num_classes = len(real_test.class_names)
    if synth.labels.max() >= num_classes:
        raise DataError(f"{synth.source} has labels up to {int(synth.labels.max())} but {dataset} "
                        f"has {num_classes} classes")
    notes = list(manifest.get("notes", []))
    num_real = min(len(synth), len(real_train))
    if num_real < len(synth):
        notes.append(f"only {num_real} real training images exist: the real classifier trains on "
                     f"fewer images than the synthetic one ({len(synth)})")
    chosen = torch.randperm(len(real_train), generator=torch.Generator().manual_seed(seed))
    chosen = chosen[:num_real]
    use_flips = str(dataset).lower() not in NO_FLIP_DATASETS
    scores = {}
    for name, images, labels in (("synthetic", synth.images, synth.labels),
                                 ("real", real_train.images[chosen], real_train.labels[chosen])):
        log(f"training the classifier on {len(images)} {name} images for {epochs} epoch(s)")
        model = fit_featnet(images, labels, num_classes=num_classes, epochs=epochs, seed=seed,
                            use_flips=use_flips, log=log)
        scores[name] = accuracy(model, real_test.images, real_test.labels)
    cas, real = scores["synthetic"], scores["real"]
    return {
        "cas": cas,
        "real_accuracy": real,
        "ratio": cas / real if real > 0 else None,
        "num_synthetic": len(synth),
        "num_real_train": num_real,
        "num_test": len(real_test),
        "dataset": dataset,
        "synth_dir": str(synth_dir),
        "epochs": epochs,
        "seed": seed,
        "classifier": "FeatNet (4 conv + 128-d features) trained by fit_featnet: SGD, one-cycle "
                      "LR, label smoothing, 1-pixel shifts" + (", h-flips" if use_flips else ""),
        "notes": notes,
    }


def format_cas(result: dict[str, Any]) -> str:
    """A few readable lines of a `classification_accuracy_score` result."""
    ratio = "n/a" if result["ratio"] is None else f"{result['ratio']:.3f}"
    lines = [
        f"Classification Accuracy Score (Ravuri & Vinyals, arXiv 1905.10887), {result['dataset']}",
        f"  trained on {result['num_synthetic']} synthetic images: "
        f"test accuracy {result['cas']:.4f}  (CAS)",
        f"  trained on {result['num_real_train']} real images:      "
        f"test accuracy {result['real_accuracy']:.4f}",
        f"  ratio CAS / real: {ratio}   ({result['num_test']} real test images, "
        f"{result['epochs']} epoch(s), seed {result['seed']})",
        f"  classifier: {result['classifier']}",
    ]
    lines += [f"  note: {note}" for note in result["notes"]]
    return "\n".join(lines)
