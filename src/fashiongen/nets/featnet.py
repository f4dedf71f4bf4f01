"""The feature network: a compact CNN classifier whose penultimate layer embeds images for metrics.

FID (Heusel et al., arXiv 1706.08500) and its relatives need an embedding in which distance
means perceptual difference. Inception-v3 features are meaningless on 28x28 grey clothing, so
(like the MNIST and Fashion-MNIST FID variants in the literature) we train a small classifier
on the dataset itself: four 3x3 convolutions with batch norm (Ioffe & Szegedy, arXiv
1502.03167) at 28, 14 and 7 pixels, a 128-d ReLU feature layer, then the class logits. It is
trained with SGD, a one-cycle learning rate (Smith & Topin, arXiv 1708.07120), label smoothing
and light augmentation (shifts of up to one pixel; horizontal flips, except for digits).
Every input is 1x28x28 grey: images of other sizes or channels are converted by
`to_featnet_input` (luma, then antialiased bilinear resize), for training and for metrics alike.
Weights are safetensors files with the training record (accuracy, seed, epochs, command, date)
in their metadata; shipped ones live in `fashiongen/featnets/`, user-trained ones in the user
cache dir (`$XDG_CACHE_HOME/fashiongen/featnets/`, default `~/.cache/...`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fashiongen.errors import ConfigError

IMAGE_SIZE = 28  # every featnet sees 1x28x28 grey images
FEATURE_DIM = 128
WIDTHS = (32, 64, 128)
FORMAT = "fashiongen-featnet/1"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "featnets"
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
MAX_SHIFT = 1  # pixels of random translation during training
BACKGROUND = -1.0  # black, in model range: what a shift uncovers
LABEL_SMOOTHING = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
WARMUP_SHARE = 0.25  # of the one-cycle schedule
MIN_SCHEDULE_STEPS = 4
NO_FLIP_DATASETS = frozenset({"mnist"})  # a mirrored digit is another glyph
BATCH_SIZE = 256  # for inference; larger batches fall out of the CPU caches


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/fashiongen`, or `~/.cache/fashiongen`."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "fashiongen"


def featnet_file_name(dataset_name: str) -> str:
    """A safe file name for a dataset's featnet: `fashion-mnist` -> `fashion-mnist.safetensors`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(dataset_name).strip("/")) or "dataset"
    return f"{stem}.safetensors"


def train_command(dataset_name: str) -> str:
    """The command that trains a featnet for `dataset_name`, for error messages."""
    return f"fashiongen featnet train --dataset {dataset_name}"


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class FeatNet(nn.Module):
    """A 1x28x28 classifier with a `feature_dim`-d penultimate layer.

    `forward` takes float images in [-1, 1] and returns logits; `features`, `logits` and
    `features_and_logits` take uint8 images in [0, 255] of any (C, H, W) and run batched,
    without gradients, on the module's device.
    """

    def __init__(self, num_classes: int = 10, *, feature_dim: int = FEATURE_DIM,
                 widths: Sequence[int] = WIDTHS, dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.widths = tuple(widths)
        self.body = nn.Sequential(
            _conv(1, c1), nn.MaxPool2d(2),                 # 28 -> 14
            _conv(c1, c2), nn.MaxPool2d(2),                 # 14 -> 7
            _conv(c2, c3), _conv(c3, c3), nn.MaxPool2d(2),  # 7 -> 3
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(c3 * 3 * 3, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        # Filled in by `load_featnet` / training; not part of the state dict.
        self.name = "untrained"
        self.class_names: list[str] = [str(i) for i in range(num_classes)]
        self.metadata: dict[str, str] = {}

    def embed_features(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 1, 28, 28) in [-1, 1] -> features (N, feature_dim), >= 0."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 1, 28, 28) in [-1, 1] -> logits (N, num_classes)."""
        return self.head(self.dropout(self.embed_features(x)))

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor, *, batch_size: int = BATCH_SIZE
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) -> float32 features (N, D) and logits (N, K), on the CPU."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        feats, logits = [], []
        try:
            for start in range(0, len(images), batch_size):
                x = to_featnet_input(images[start:start + batch_size]).to(device)
                x = x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU
                f = self.embed_features(x)
                feats.append(f.float().cpu())
                logits.append(self.head(f).float().cpu())
        finally:
            self.train(was_training)
        if not feats:
            return torch.zeros(0, self.feature_dim), torch.zeros(0, self.num_classes)
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: torch.Tensor, *, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 features (N, feature_dim)."""
        return self.features_and_logits(images, batch_size=batch_size)[0]

    def logits(self, images: torch.Tensor, *, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 logits (N, num_classes)."""
        return self.features_and_logits(images, batch_size=batch_size)[1]

    @property
    def test_accuracy(self) -> float | None:
        """Held-out accuracy recorded at training time, if any."""
        value = self.metadata.get("test_accuracy")
        return float(value) if value not in (None, "") else None

    def fingerprint(self) -> str:
        """12 hex digits of SHA-256 over the state dict: a cache key for reference stats."""
        digest = hashlib.sha256()
        for key, value in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]


def to_featnet_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W), C in {1, 3, 4} -> float32 (N, 1, 28, 28) in [-1, 1].

    Colour becomes luma (alpha dropped); other sizes are resized with antialiased bilinear
    interpolation. 1x28x28 input passes through unchanged apart from the range conversion.
    """
    if images.dtype != torch.uint8:
        raise TypeError("featnet input must be uint8 images in [0, 255]; use to_uint8 first")
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise ValueError(f"expected (N, C, H, W) with C in 1, 3, 4; got {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] != 1:
        weights = torch.tensor(LUMA_WEIGHTS, device=x.device).view(1, 3, 1, 1)
        x = (x[:, :3] * weights).sum(1, keepdim=True)
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                          align_corners=False, antialias=True).clamp_(0, 255)
    return x.div_(127.5).sub_(1.0)


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


def fit_featnet(train_images: torch.Tensor, train_labels: torch.Tensor, *, num_classes: int,
                epochs: int, seed: int, batch_size: int = 128, max_lr: float = 0.1,
                use_flips: bool = True, log: Callable[[str], None] = print) -> FeatNet:
    """Train a FeatNet on uint8 (N, C, H, W) images; deterministic given `seed` on one device.

    Returns the model in eval mode. Shuffling and augmentation draw from one generator
    seeded with `seed`; initialisation and dropout from `torch.manual_seed(seed)`.
    """
    if epochs < 1:
        raise ConfigError(f"featnet epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = to_featnet_input(train_images)
    y_all = train_labels.long()
    model = FeatNet(num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=max_lr, momentum=MOMENTUM,
                                nesterov=True, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = max(1, len(x_all) // batch_size)  # drop the ragged last batch (BN)
    # OneCycleLR needs >= 1 step in each phase; tiny runs get a longer warm-up share
    total_steps = max(MIN_SCHEDULE_STEPS, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps,
        pct_start=max(WARMUP_SHARE, 2 / total_steps))
    model.train()
    start = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
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
        log(f"epoch {epoch + 1}/{epochs}: loss {total_loss / seen:.4f}, "
            f"train acc {correct / seen:.4f}, {time.time() - start:.0f} s")
    return model.eval()


def save_featnet(path: str | Path, model: FeatNet, metadata: dict[str, Any]) -> Path:
    """Write weights (fp32) and the training record atomically to a safetensors file."""
    from fashiongen.checkpoint import atomic_path

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record = {
        "format": FORMAT,
        "num_classes": str(model.num_classes),
        "feature_dim": str(model.feature_dim),
        "widths": json.dumps(list(model.widths)),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=record)
        tmp.chmod(0o644)  # a weights file to share or ship, not a private temporary
    return path


def featnet_path(dataset_name: str) -> Path | None:
    """The featnet file for a dataset: shipped first, then the user cache dir; None if neither."""
    name = featnet_file_name(dataset_name)
    for folder in (SHIPPED_DIR, user_cache_dir() / "featnets"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_featnet_file(path: str | Path) -> FeatNet:
    """Build a FeatNet from a safetensors file written by `save_featnet`, in eval mode."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        if metadata.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a fashiongen featnet")
        model = FeatNet(int(metadata["num_classes"]), feature_dim=int(metadata["feature_dim"]),
                        widths=json.loads(metadata["widths"]))
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"featnet {path} is unreadable or does not fit ({first})") from None
    model.name = metadata.get("dataset", path.stem)
    if "class_names" in metadata:
        model.class_names = json.loads(metadata["class_names"])
    model.metadata = metadata
    return model.to(memory_format=torch.channels_last).eval()


def load_featnet(dataset_name: str = "fashion-mnist") -> FeatNet:
    """The trained featnet for a dataset (shipped, or trained by the user), in eval mode.

    Raises:
        ConfigError: none exists; the message gives the command that trains one.
    """
    path = featnet_path(dataset_name)
    if path is None:
        raise ConfigError(
            f"no feature network for dataset {dataset_name!r}: once its data is present, train "
            f"one with `{train_command(dataset_name)}` (writes "
            f"{user_cache_dir() / 'featnets' / featnet_file_name(dataset_name)})")
    return load_featnet_file(path)


def train_featnet(dataset_name: str = "fashion-mnist", *, epochs: int = 12, seed: int = 0,
                  out_path: str | Path | None = None, use_flips: bool | None = None,
                  command: str | None = None, log: Callable[[str], None] = print) -> FeatNet:
    """Train a featnet on any dataset `fashiongen.data.load_dataset` accepts, and save it.

    Images are converted to 1x28x28 grey (`to_featnet_input`). Accuracy is measured on the
    dataset's "test" split and stored in the file. Deterministic given `seed` (one device,
    one thread count). Horizontal flips are used unless the dataset is MNIST.

    Args:
        dataset_name: a name or folder `load_dataset` understands.
        epochs: passes over the training split.
        seed: seeds initialisation, shuffling, augmentation and dropout.
        out_path: defaults to `$XDG_CACHE_HOME/fashiongen/featnets/<name>.safetensors`.
        use_flips: None picks by dataset (no flips for digits).
        command: recorded in the file's metadata (defaults to this process's argv).
        log: receives one progress line per epoch.
    """
    from fashiongen.data import load_dataset

    return train_featnet_on(load_dataset(dataset_name, "train"), load_dataset(dataset_name, "test"),
                            dataset_name=dataset_name, epochs=epochs, seed=seed,
                            out_path=out_path, use_flips=use_flips, command=command, log=log)


def train_featnet_on(train: Any, test: Any, *, dataset_name: str, epochs: int, seed: int,
                     out_path: str | Path | None = None, use_flips: bool | None = None,
                     command: str | None = None, note: str | None = None,
                     log: Callable[[str], None] = print) -> FeatNet:
    """`train_featnet` on loaded datasets (`.images`, `.labels`, `.class_names`, `.name`)."""
    num_classes = len(train.class_names)
    if use_flips is None:
        use_flips = str(dataset_name).lower() not in NO_FLIP_DATASETS
    started = time.time()
    model = fit_featnet(train.images, train.labels, num_classes=num_classes, epochs=epochs,
                        seed=seed, use_flips=use_flips, log=log)
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
    out = Path(out_path) if out_path else user_cache_dir() / "featnets" / featnet_file_name(
        dataset_name)
    save_featnet(out, model, metadata)
    log(f"saved {out}")
    return model
