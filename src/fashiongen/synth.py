"""Generated images as data: labelled synthetic datasets, and their Classification Accuracy Score.

`write_synthetic_dataset` turns a trained model into a labelled dataset on disk, in one of
three formats that the data layer loads back: `idx` (the four standard Fashion-MNIST file
names, for `--data-dir DIR`), `npz` (`train.npz`, `test.npz`, the sample-file format of
`fashiongen.samples`) or `png` (`train/` and `test/` of class folders, for `--data
folder:DIR`); `fashiongen.samples.load_synthetic` reads any of them back. Conditional models
are asked for balanced classes; unconditional ones are labelled by the feature network's
argmax. `classification_accuracy_score` is the Classification Accuracy Score of Ravuri &
Vinyals (arXiv 1905.10887): the real test accuracy of a classifier trained only on the
synthetic set, beside the same classifier (the metrics' FeatNet architecture, `fit_featnet`,
same epochs and seed) trained on an equal number of real training images.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from fashiongen import limits
from fashiongen.checkpoint import load_model
from fashiongen.data import load_dataset
from fashiongen.data.sources import write_idx_split
from fashiongen.device import select_device
from fashiongen.errors import ConfigError, DataError
from fashiongen.evaluation import draw_balanced, resolve_featnet
from fashiongen.files import check_free, staged_folder
from fashiongen.images import to_pil
from fashiongen.metrics import featnet_training
from fashiongen.samples import (
    MANIFEST,
    MANIFEST_FORMAT,
    class_names_of,
    class_slug,
    load_synthetic,
    read_manifest,
    save_samples,
)

SynthFormat = Literal["idx", "npz", "png"]
SYNTH_FORMATS: tuple[str, ...] = ("idx", "npz", "png")
TEST_DIVISOR = 6  # the test split holds N // 6 more samples: Fashion-MNIST's 10k to 60k
DEFAULT_CAS_EPOCHS = 5
CAS_CLASSIFIER = (
    "FeatNet (4 conv + 128-d features) trained by fit_featnet: SGD, one-cycle "
    "LR, label smoothing, 1-pixel shifts"
)


# ---------------------------------------------------------------- synthetic datasets


def write_synthetic_dataset(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    num_samples: int,
    fmt: SynthFormat = "idx",
    seed: int = 0,
    featnet: Any = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, Any]:
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
    _check_request(fmt, num_samples)
    out_dir = Path(out_dir)
    check_free(out_dir, overwrite=overwrite, folder=True)  # before the sampling
    model, ckpt = load_model(checkpoint, device=select_device("auto"))
    _check_format_fits(fmt, model)
    class_names, featnet, notes = _labelling(model, ckpt, featnet)
    splits, labelled_by = _draw_splits(
        model, ckpt, featnet, num_samples, seed=seed, log=log, progress=progress
    )
    with staged_folder(out_dir, overwrite=overwrite) as tmp:
        files = _WRITERS[fmt](tmp, splits, class_names)
        manifest = _manifest(
            ckpt, fmt, seed, splits, class_names, files, notes, labelled_by=labelled_by
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _check_request(fmt: str, num_samples: int) -> None:
    """A one-line ConfigError for an unknown format or a count below one."""
    if fmt not in SYNTH_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(SYNTH_FORMATS)}")
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")


def _check_format_fits(fmt: str, model: Any) -> None:
    """A one-line ConfigError for colour images asked of the grey-only IDX format."""
    if fmt == "idx" and model.image_shape[0] != 1:
        raise ConfigError(
            f"IDX files hold grey images; this model makes {model.image_shape[0]}"
            "-channel ones: use --format npz or png"
        )


def _draw_splits(
    model: Any,
    ckpt: Any,
    featnet: Any,
    num_samples: int,
    *,
    seed: int,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[dict, str]:
    """Draw the train split (`num_samples`) and the test split (`num_samples // 6`, at
    least one per class) in one go, labelled by request or else by `featnet`'s argmax.

    Returns:
        {"train": (images, labels), "test": (images, labels)} and "requested" or "featnet".
    """
    num_test = max(model.num_classes or 1, num_samples // TEST_DIVISOR)
    total = num_samples + num_test
    limits.check_images_fit(total, model.image_shape, hint=" (train and test split together)")
    log(f"sampling {total} images from {ckpt.path} ({ckpt.config.model.name}, step {ckpt.step})")
    drawn = draw_balanced(model, total, sampling=ckpt.config.sample, seed=seed, progress=progress)
    images, requested = drawn.images, drawn.labels
    labels = requested if requested is not None else featnet.logits(images).argmax(1)
    splits = {
        "train": (images[:num_samples], labels[:num_samples]),
        "test": (images[num_samples:], labels[num_samples:]),
    }
    return splits, "requested" if requested is not None else "featnet"


def _labelling(model: Any, ckpt: Any, featnet: Any) -> tuple[list[str], Any, list[str]]:
    """The class names, the feature net that labels an unconditional model's samples (by
    argmax; a conditional model's are labelled by request and keep `featnet` as given),
    and the note the manifest carries about it."""
    if model.num_classes:
        return class_names_of(ckpt), featnet, []
    featnet = resolve_featnet(featnet, ckpt.config.data.name)
    note = (
        f"unconditional model: labels are the feature net's predictions (argmax; "
        f"{featnet.name}, test accuracy {featnet.test_accuracy})"
    )
    return list(featnet.class_names), featnet, [note]


def _manifest(
    ckpt: Any,
    fmt: str,
    seed: int,
    splits: dict,
    class_names: list[str],
    files: list[str],
    notes: list[str],
    *,
    labelled_by: str,
) -> dict[str, Any]:
    """synth.json: where the dataset comes from, what it holds and how it was labelled."""
    train_labels = splits["train"][1]
    return {
        "format": MANIFEST_FORMAT,
        "file_format": fmt,
        "checkpoint": str(ckpt.path),
        "family": ckpt.config.model.name,
        "step": ckpt.step,
        "dataset": ckpt.config.data.name,
        "seed": seed,
        "num_train": len(train_labels),
        "num_test": len(splits["test"][1]),
        "class_names": class_names,
        "labels": labelled_by,
        "class_counts": torch.bincount(train_labels, minlength=len(class_names)).tolist(),
        "files": files,
        "notes": notes,
    }


def _write_idx(folder: Path, splits: dict, class_names: list[str]) -> list[str]:
    written = []
    for split, (images, labels) in splits.items():
        paths = write_idx_split(folder, split, images[:, 0].numpy(), labels.numpy())
        written += [p.name for p in paths]
    return written


def _write_npz(folder: Path, splits: dict, class_names: list[str]) -> list[str]:
    for split, (images, labels) in splits.items():
        save_samples(folder / f"{split}.npz", images, labels, class_names=class_names)
    return [f"{split}.npz" for split in splits]


def _write_png(folder: Path, splits: dict, class_names: list[str]) -> list[str]:
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


# ---------------------------------------------------------------- CAS


def classification_accuracy_score(
    synth_dir: str | Path,
    *,
    epochs: int = DEFAULT_CAS_EPOCHS,
    seed: int = 0,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
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
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    synth = load_synthetic(synth_dir, "train")
    manifest = read_manifest(synth_dir) or {}
    dataset = dataset or manifest.get("dataset") or "fashion-mnist"
    real_train = load_dataset(dataset, "train", data_dir=data_dir)
    real_test = load_dataset(dataset, "test", data_dir=data_dir)
    _check_labels_fit(synth, dataset, len(real_test.class_names))
    notes = list(manifest.get("notes", []))
    real_images, real_labels = _real_training_subset(real_train, len(synth), seed, notes)
    use_flips = str(dataset).lower() not in featnet_training.NO_FLIP_DATASETS
    training = {"epochs": epochs, "seed": seed, "use_flips": use_flips, "log": log}
    cas = _real_test_accuracy("synthetic", synth.images, synth.labels, real_test, **training)
    real = _real_test_accuracy("real", real_images, real_labels, real_test, **training)
    return {
        "cas": cas,
        "real_accuracy": real,
        "ratio": cas / real if real > 0 else None,
        "num_synthetic": len(synth),
        "num_real_train": len(real_labels),
        "num_test": len(real_test),
        "dataset": dataset,
        "synth_dir": str(synth_dir),
        "epochs": epochs,
        "seed": seed,
        "classifier": CAS_CLASSIFIER + (", h-flips" if use_flips else ""),
        "notes": notes,
    }


def _check_labels_fit(synth: Any, dataset: str, num_classes: int) -> None:
    """A one-line DataError if the synthetic labels name more classes than `dataset` has."""
    if synth.labels.max() >= num_classes:
        raise DataError(
            f"{synth.source} has labels up to {int(synth.labels.max())} but {dataset} "
            f"has {num_classes} classes"
        )


def _real_training_subset(
    real_train: Any, num_synthetic: int, seed: int, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of the real training images and labels, as many as the
    synthetic set holds where there are enough (a note in `notes` where not)."""
    num_real = min(num_synthetic, len(real_train))
    if num_real < num_synthetic:
        notes.append(
            f"only {num_real} real training images exist: the real classifier trains on "
            f"fewer images than the synthetic one ({num_synthetic})"
        )
    chosen = torch.randperm(len(real_train), generator=torch.Generator().manual_seed(seed))
    chosen = chosen[:num_real]
    return real_train.images[chosen], real_train.labels[chosen]


def _real_test_accuracy(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    real_test: Any,
    *,
    epochs: int,
    seed: int,
    use_flips: bool,
    log: Callable[[str], None],
) -> float:
    """Train a classifier on `images` (the `name` set) and score it on the real test split."""
    log(f"training the classifier on {len(images)} {name} images for {epochs} epoch(s)")
    model = featnet_training.fit_featnet(
        images,
        labels,
        num_classes=len(real_test.class_names),
        epochs=epochs,
        seed=seed,
        use_flips=use_flips,
        log=log,
    )
    return featnet_training.accuracy(model, real_test.images, real_test.labels)


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
