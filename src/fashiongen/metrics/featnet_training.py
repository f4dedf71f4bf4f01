"""Training the feature network, and fitting the standardisation of its texture statistics.

The featnet (`fashiongen.nets.featnet`) is trained with SGD, a one-cycle learning rate (Smith &
Topin, arXiv 1708.07120), label smoothing and light augmentation (shifts of up to one pixel;
horizontal flips, except for digits). After training, `fit_texture_standardisation` measures
the texture statistics of the first two conv blocks on the training split: their means and
deviations standardise each statistic, and one scale makes the texture half of the metric
features carry the same total variance as the semantic half, so neither dominates the
Fréchet distance. `fashiongen featnet train` calls `train_featnet`; `--widths` and
`--feature-dim` give the independent second net of `benchmarks/featnet_agreement.py`.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fashiongen.data import load_dataset
from fashiongen.errors import ConfigError
from fashiongen.files import cache_root
from fashiongen.nets.featnet import (
    BATCH_SIZE,
    FEATURE_DIM,
    WIDTHS,
    FeatNet,
    featnet_file_name,
    save_featnet,
    to_featnet_input,
)

MAX_SHIFT = 1  # pixels of random translation during training
BACKGROUND = -1.0  # black, in model range: what a shift uncovers
LABEL_SMOOTHING = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
WARMUP_SHARE = 0.25  # of the one-cycle schedule
MIN_SCHEDULE_STEPS = 4
NO_FLIP_DATASETS = frozenset({"mnist"})  # a mirrored digit is another glyph
MIN_TEXTURE_STD = 1e-6  # a statistic constant over the training split (a dead channel)


@torch.no_grad()
def texture_statistics(
    model: FeatNet, images: torch.Tensor, *, batch_size: int = BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) -> float64 semantic features (N, feature_dim) and raw texture
    statistics (N, texture_dim), unstandardised."""
    model.eval()
    semantic, texture = [], []
    for start in range(0, len(images), batch_size):
        x = to_featnet_input(images[start : start + batch_size])
        s, t = model.semantic_and_texture(x.contiguous(memory_format=torch.channels_last))
        semantic.append(s.double())
        texture.append(t.double())
    return torch.cat(semantic), torch.cat(texture)


def fit_texture_standardisation(model: FeatNet, images: torch.Tensor) -> None:
    """Set `model`'s texture standardisation from uint8 training images (N >= 2).

    Each texture statistic is centred and divided by its deviation over `images`; the
    scale sqrt(tr Cov(semantic) / texture_dim) then gives the texture half the semantic
    half's total variance.
    """
    if len(images) < 2:
        raise ConfigError("the texture standardisation needs at least two training images")
    semantic, texture = texture_statistics(model, images)
    std = texture.std(0).clamp_min(MIN_TEXTURE_STD)
    semantic_variance = float(semantic.var(0).sum())
    scale = (max(semantic_variance, MIN_TEXTURE_STD) / model.texture_dim) ** 0.5
    model.set_texture_standardisation(texture.mean(0).float(), std.float(), scale)


def augment(x: torch.Tensor, generator: torch.Generator, *, use_flips: bool) -> torch.Tensor:
    """Random shifts of up to MAX_SHIFT pixels (uncovering background) and optional h-flips."""
    n, _, h, w = x.shape
    padded = F.pad(x, (MAX_SHIFT,) * 4, value=BACKGROUND)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (2, n), generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (offsets[1, :, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    if use_flips:
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: FeatNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on uint8 images and int labels."""
    predicted = model.logits(images).argmax(1)
    return float((predicted == labels.cpu()).float().mean())


def fit_featnet(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    num_classes: int,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    max_lr: float = 0.1,
    use_flips: bool = True,
    feature_dim: int = FEATURE_DIM,
    widths: Sequence[int] = WIDTHS,
    log: Callable[[str], None] = print,
) -> FeatNet:
    """Train a FeatNet on uint8 (N, C, H, W) images; deterministic given `seed` on one device.

    Returns the model in eval mode, its texture standardisation still the identity (see
    `fit_texture_standardisation`). Shuffling and augmentation draw from one generator
    seeded with `seed`; initialisation and dropout from `torch.manual_seed(seed)`.
    """
    if epochs < 1:
        raise ConfigError(f"featnet epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = to_featnet_input(train_images)
    y_all = train_labels.long()
    model = FeatNet(num_classes, feature_dim=feature_dim, widths=widths).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=max_lr, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    steps_per_epoch = max(1, len(x_all) // batch_size)  # drop the ragged last batch (BN)
    # OneCycleLR needs >= 1 step in each phase; tiny runs get a longer warm-up share
    total_steps = max(MIN_SCHEDULE_STEPS, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=max(WARMUP_SHARE, 2 / total_steps),
    )
    model.train()
    start = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = augment(x_all[idx], generator, use_flips=use_flips)
            x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = F.cross_entropy(logits, y_all[idx], label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y_all[idx]).sum())
            seen += len(idx)
        log(
            f"epoch {epoch + 1}/{epochs}: loss {total_loss / seen:.4f}, "
            f"train acc {correct / seen:.4f}, {time.time() - start:.0f} s"
        )
    return model.eval()


def train_featnet(
    dataset_name: str = "fashion-mnist",
    *,
    epochs: int = 12,
    seed: int = 0,
    out_path: str | Path | None = None,
    use_flips: bool | None = None,
    feature_dim: int = FEATURE_DIM,
    widths: Sequence[int] = WIDTHS,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> FeatNet:
    """Train a featnet on any dataset `fashiongen.data.load_dataset` accepts, and save it.

    Images are converted to 1x28x28 grey (`to_featnet_input`). The texture statistics are
    standardised on the training split (`fit_texture_standardisation`). Accuracy is measured
    on the dataset's "test" split and stored in the file. Deterministic given `seed` (one device,
    one thread count). Horizontal flips are used unless the dataset is MNIST.

    Args:
        dataset_name: a name or folder `load_dataset` understands.
        epochs: passes over the training split.
        seed: seeds initialisation, shuffling, augmentation and dropout.
        out_path: defaults to `$XDG_CACHE_HOME/fashiongen/featnets/<name>.safetensors`.
        use_flips: None picks by dataset (no flips for digits).
        feature_dim, widths: the architecture (semantic layer width, conv widths at 28, 14
            and 7 pixels); another one gives an independent net for `featnet_agreement.py`.
        command: recorded in the file's metadata (defaults to this process's argv).
        log: receives one progress line per epoch.
    """
    return train_featnet_on(
        load_dataset(dataset_name, "train"),
        load_dataset(dataset_name, "test"),
        dataset_name=dataset_name,
        epochs=epochs,
        seed=seed,
        out_path=out_path,
        use_flips=use_flips,
        feature_dim=feature_dim,
        widths=widths,
        command=command,
        log=log,
    )


def train_featnet_on(
    train: Any,
    test: Any,
    *,
    dataset_name: str,
    epochs: int,
    seed: int,
    out_path: str | Path | None = None,
    use_flips: bool | None = None,
    feature_dim: int = FEATURE_DIM,
    widths: Sequence[int] = WIDTHS,
    command: str | None = None,
    note: str | None = None,
    log: Callable[[str], None] = print,
) -> FeatNet:
    """`train_featnet` on loaded datasets (`.images`, `.labels`, `.class_names`, `.name`)."""
    num_classes = len(train.class_names)
    if use_flips is None:
        use_flips = str(dataset_name).lower() not in NO_FLIP_DATASETS
    started = time.time()
    model = fit_featnet(
        train.images,
        train.labels,
        num_classes=num_classes,
        epochs=epochs,
        seed=seed,
        use_flips=use_flips,
        feature_dim=feature_dim,
        widths=widths,
        log=log,
    )
    fit_texture_standardisation(model, train.images)
    train_seconds = time.time() - started
    test_accuracy = accuracy(model, test.images, test.labels)
    log(f"test accuracy {test_accuracy:.4f} after {train_seconds:.0f} s of training")
    metadata = {
        "dataset": train.name,
        "class_names": list(train.class_names),
        "test_accuracy": f"{test_accuracy:.4f}",
        "test_count": str(len(test.labels)),
        "seed": str(seed),
        "epochs": str(epochs),
        "use_flips": str(use_flips).lower(),
        "train_seconds": f"{train_seconds:.0f}",
        "num_threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        **({"note": note} if note else {}),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    model.name = train.name
    model.class_names = list(train.class_names)
    model.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    out = (
        Path(out_path) if out_path else cache_root() / "featnets" / featnet_file_name(dataset_name)
    )
    save_featnet(out, model, metadata)
    log(f"saved {out}")
    return model
