"""The feature network: a compact CNN classifier whose activations embed images for metrics.

FID (Heusel et al., arXiv 1706.08500) and its relatives need an embedding in which distance
means perceptual difference. Inception-v3 features are meaningless on 28x28 grey clothing, so
(like the MNIST and Fashion-MNIST FID variants in the literature) we train a small classifier
on the dataset itself: four 3x3 convolutions with batch norm (Ioffe & Szegedy, arXiv
1502.03167) at 28, 14 and 7 pixels, a 128-d ReLU feature layer, then the class logits. A
classifier's last layers map unfamiliar texture onto class regions, so the metric embedding
(`features`) is the 128-d semantic layer followed by low-level statistics of the first two
conv blocks (each channel's spatial mean and standard deviation, as in style statistics,
Huang & Belongie, arXiv 1703.06868), standardised with the training split's means and
deviations and scaled so that both halves carry the same total variance there: speckle,
checkerboards, blur and contrast move the second half even where the classifier's decision
does not change. The standardisation is stored with the weights (buffers `texture_mean`,
`texture_std`, `texture_scale`). Training lives in `fashiongen.metrics.featnet_training`.
Every input is 1x28x28 grey: images of other sizes or channels are converted by
`to_featnet_input` (luma, then antialiased bilinear resize), for training and for metrics alike.
Weights are safetensors files with the training record (accuracy, seed, epochs, command, date)
in their metadata; shipped ones live in `fashiongen/featnets/`, user-trained ones in the user
cache dir (`$XDG_CACHE_HOME/fashiongen/featnets/`, default `~/.cache/...`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fashiongen.errors import ConfigError
from fashiongen.files import atomic_path, cache_root, safe_name

IMAGE_SIZE = 28  # every featnet sees 1x28x28 grey images
FEATURE_DIM = 128
WIDTHS = (32, 64, 128)
FORMAT = "fashiongen-featnet/2"
OLD_FORMAT = "fashiongen-featnet/1"  # before the texture statistics: refused with a hint
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "featnets"
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
TEXTURE_BLOCKS = (0, 2)  # indices in `body` of the 28- and 14-pixel conv blocks
BATCH_SIZE = 256  # for inference; larger batches fall out of the CPU caches


def featnet_file_name(dataset_name: str) -> str:
    """A safe file name for a dataset's featnet: `fashion-mnist` -> `fashion-mnist.safetensors`."""
    return f"{safe_name(dataset_name, fallback='dataset')}.safetensors"


def train_command(dataset_name: str) -> str:
    """The command that trains a featnet for `dataset_name`, for error messages."""
    return f"fashiongen featnet train --dataset {dataset_name}"


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FeatNet(nn.Module):
    """A 1x28x28 classifier with a `feature_dim`-d penultimate layer.

    `forward` takes float images in [-1, 1] and returns logits; `features`, `logits` and
    `features_and_logits` take uint8 images in [0, 255] of any (C, H, W) and run batched,
    without gradients, on the module's device. The metric features are `metric_dim` =
    `feature_dim` + `texture_dim` wide: the semantic layer, then the standardised texture
    statistics (identity standardisation until `set_texture_standardisation` is called).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        feature_dim: int = FEATURE_DIM,
        widths: Sequence[int] = WIDTHS,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.widths = tuple(widths)
        self.body = nn.Sequential(
            _conv(1, c1),
            nn.MaxPool2d(2),  # 28 -> 14
            _conv(c1, c2),
            nn.MaxPool2d(2),  # 14 -> 7
            _conv(c2, c3),
            _conv(c3, c3),
            nn.MaxPool2d(2),  # 7 -> 3
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(c3 * 3 * 3, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.texture_dim = 2 * (c1 + c2)  # a mean and a std per channel of two blocks
        self.register_buffer("texture_mean", torch.zeros(self.texture_dim))
        self.register_buffer("texture_std", torch.ones(self.texture_dim))
        self.register_buffer("texture_scale", torch.ones(()))
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

    @property
    def metric_dim(self) -> int:
        return self.feature_dim + self.texture_dim

    def semantic_and_texture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float (N, 1, 28, 28) in [-1, 1] -> semantic features (N, feature_dim) and raw
        texture statistics (N, texture_dim): per channel of each `TEXTURE_BLOCKS` output,
        the spatial means, then the spatial standard deviations."""
        stats = []
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index in TEXTURE_BLOCKS:
                stats += channel_mean_std(x)
        return self.embed(x), torch.cat(stats, 1)

    def standardise_texture(self, texture: torch.Tensor) -> torch.Tensor:
        """Raw texture statistics -> their metric half: (t - mean) / std * scale."""
        return (texture - self.texture_mean) / self.texture_std * self.texture_scale

    def set_texture_standardisation(
        self, mean: torch.Tensor, std: torch.Tensor, scale: float
    ) -> None:
        """Store the training split's texture means, deviations (> 0) and the half's scale."""
        if mean.shape != (self.texture_dim,) or std.shape != (self.texture_dim,):
            raise ValueError(f"texture standardisation must be ({self.texture_dim},) vectors")
        if not bool((std > 0).all()) or not scale > 0:
            raise ValueError("texture deviations and scale must be positive")
        self.texture_mean.copy_(mean)
        self.texture_std.copy_(std)
        self.texture_scale.fill_(float(scale))

    @torch.no_grad()
    def features_and_logits(
        self, images: torch.Tensor, *, batch_size: int = BATCH_SIZE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) -> float32 metric features (N, metric_dim) and logits (N, K),
        on the CPU."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        feats, logits = [], []
        try:
            for start in range(0, len(images), batch_size):
                x = to_featnet_input(images[start : start + batch_size]).to(device)
                x = x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU
                semantic, texture = self.semantic_and_texture(x)
                f = torch.cat([semantic, self.standardise_texture(texture)], 1)
                feats.append(f.float().cpu())
                logits.append(self.head(semantic).float().cpu())
        finally:
            self.train(was_training)
        if not feats:
            return torch.zeros(0, self.metric_dim), torch.zeros(0, self.num_classes)
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: torch.Tensor, *, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 metric features (N, metric_dim)."""
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


def channel_mean_std(x: torch.Tensor) -> list[torch.Tensor]:
    """(N, C, H, W) -> [spatial means (N, C), spatial standard deviations (N, C)] (unbiased).

    From the first two moments over an (N, H*W, C) view: one pass over channels-last
    activations, 2x faster on the CPU than `mean` and `std` over (2, 3).
    """
    flat = x.permute(0, 2, 3, 1).reshape(len(x), -1, x.shape[1])
    count = flat.shape[1]
    mean = flat.mean(1)
    variance = (flat.square().mean(1) - mean.square()) * (count / max(count - 1, 1))
    return [mean, variance.clamp_min(0).sqrt()]


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
        x = F.interpolate(
            x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True
        ).clamp_(0, 255)
    return x.div_(127.5).sub_(1.0)


def save_featnet(path: str | Path, model: FeatNet, metadata: dict[str, Any]) -> Path:
    """Write weights (fp32) and the training record atomically to a safetensors file."""
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
    for folder in (SHIPPED_DIR, cache_root() / "featnets"):
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
        if metadata.get("format") == OLD_FORMAT:
            retrain = train_command(metadata.get("dataset", path.stem))
            raise ConfigError(
                f"featnet {path} predates the texture-aware metric (no texture "
                f"standardisation): retrain it with `{retrain} --overwrite`"
            )
        if metadata.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a fashiongen featnet")
        model = FeatNet(
            int(metadata["num_classes"]),
            feature_dim=int(metadata["feature_dim"]),
            widths=json.loads(metadata["widths"]),
        )
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
            f"{cache_root() / 'featnets' / featnet_file_name(dataset_name)})"
        )
    return load_featnet_file(path)
