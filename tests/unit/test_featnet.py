"""The feature network: shapes, input conversion, texture standardisation, deterministic
training, file round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fashiongen.errors import ConfigError
from fashiongen.metrics.featnet_training import (
    accuracy,
    augment,
    fit_featnet,
    fit_texture_standardisation,
    texture_statistics,
    train_featnet,
)
from fashiongen.nets import featnet as featnet_module
from fashiongen.nets.featnet import (
    FEATURE_DIM,
    FeatNet,
    channel_mean_std,
    load_featnet,
    load_featnet_file,
    save_featnet,
    to_featnet_input,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = featnet_module.SHIPPED_DIR / "fashion-mnist.safetensors"


@pytest.fixture(autouse=True)
def _tmp_cache_one_thread(tmp_path, monkeypatch):
    # one thread: these tensors are small, and extra threads only contend on a shared CPU
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def test_shapes_and_ranges():
    model = FeatNet(10).eval()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    features, logits = model.features_and_logits(images, batch_size=2)
    assert model.texture_dim == 2 * (32 + 64) and model.metric_dim == FEATURE_DIM + 192
    assert features.shape == (5, model.metric_dim) and logits.shape == (5, 10)
    assert (features[:, :FEATURE_DIM] >= 0).all() and features.dtype == torch.float32
    torch.testing.assert_close(model.features(images), features)
    torch.testing.assert_close(model(to_featnet_input(images)), logits)
    assert model.features(images[:0]).shape == (0, model.metric_dim)
    semantic, texture = model.semantic_and_texture(to_featnet_input(images))
    torch.testing.assert_close(features, torch.cat([semantic, texture], 1))  # identity


def test_channel_mean_std_matches_torch_on_channels_last():
    x = torch.rand(3, 5, 7, 6, generator=torch.Generator().manual_seed(2)) * 4
    mean, std = channel_mean_std(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(mean, x.mean((2, 3)))
    torch.testing.assert_close(std, x.std((2, 3)))


def test_texture_standardisation_balances_the_halves():
    torch.manual_seed(0)
    model = FeatNet(4, widths=(8, 16, 16)).eval()
    images, _ = tiny_data(200)
    fit_texture_standardisation(model, images)
    features = model.features(images).double()
    semantic, texture = features[:, :FEATURE_DIM], features[:, FEATURE_DIM:]
    torch.testing.assert_close(
        texture.mean(0), torch.zeros(model.texture_dim, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(texture.var(0).sum(), semantic.var(0).sum(), rtol=1e-3, atol=0)
    raw = texture_statistics(model, images)[1]
    torch.testing.assert_close(raw.std(0).float(), model.texture_std)
    with pytest.raises(ValueError, match="positive"):
        model.set_texture_standardisation(model.texture_mean, -model.texture_std, 1.0)


def test_input_conversion():
    grey = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 28, 28)
    x = to_featnet_input(grey.contiguous())
    assert x.shape == (2, 1, 28, 28) and x[0].eq(-1).all() and x[1].eq(1).all()
    rgb = torch.randint(0, 256, (3, 3, 64, 48), dtype=torch.uint8)
    converted = to_featnet_input(rgb)
    assert converted.shape == (3, 1, 28, 28) and converted.abs().max() <= 1
    with pytest.raises(TypeError, match="uint8"):
        to_featnet_input(rgb.float())
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        to_featnet_input(rgb[:, :2])


def test_augment_is_reproducible_and_keeps_shape():
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    first = augment(x, torch.Generator().manual_seed(0), use_flips=True)
    second = augment(x, torch.Generator().manual_seed(0), use_flips=True)
    assert first.shape == x.shape and torch.equal(first, second)
    assert first.min() >= -1 and first.max() <= 1


def tiny_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 4
    images = (
        labels.view(n, 1, 1, 1) * 60 + torch.randint(0, 40, (n, 1, 28, 28), generator=generator)
    ).to(torch.uint8)
    return images, labels


def test_training_is_deterministic_given_the_seed():
    images, labels = tiny_data()
    lines: list[str] = []
    runs = [
        fit_featnet(
            images, labels, num_classes=4, epochs=2, seed=3, batch_size=16, log=lines.append
        )
        for _ in range(2)
    ]
    for key, value in runs[0].state_dict().items():
        assert torch.equal(value, runs[1].state_dict()[key]), key
    assert not runs[0].training and len(lines) == 4
    other = fit_featnet(
        images, labels, num_classes=4, epochs=1, seed=4, batch_size=16, log=lines.append
    )
    assert not torch.equal(other.head.weight, runs[0].head.weight)
    with pytest.raises(ConfigError, match="epochs"):
        fit_featnet(images, labels, num_classes=4, epochs=0, seed=0)


def test_accuracy_counts_agreeing_predictions():
    torch.manual_seed(0)
    model = FeatNet(4).eval()
    images, _ = tiny_data(8)
    predicted = model.logits(images).argmax(1)
    assert accuracy(model, images, predicted) == 1.0
    assert accuracy(model, images, (predicted + 1) % 4) == 0.0
    half = torch.where(torch.arange(8) < 4, predicted, (predicted + 1) % 4)
    assert accuracy(model, images, half) == 0.5


def test_training_learns_separable_classes():
    images, labels = tiny_data(128)  # four brightness bands: separable by the mean alone
    model = fit_featnet(
        images,
        labels,
        num_classes=4,
        epochs=8,
        seed=0,
        batch_size=16,
        max_lr=0.05,
        log=lambda line: None,
    )
    assert accuracy(model, images, labels) >= 0.9  # chance is 0.25


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FeatNet(4).eval()
    fit_texture_standardisation(model, tiny_data(16)[0])
    path = save_featnet(
        tmp_path / "net.safetensors",
        model,
        {"dataset": "toy", "class_names": ["a", "b", "c", "d"], "test_accuracy": "0.5000"},
    )
    loaded = load_featnet_file(path)
    images, _ = tiny_data(6)
    torch.testing.assert_close(loaded.logits(images), model.logits(images))
    torch.testing.assert_close(loaded.features(images), model.features(images))
    assert loaded.name == "toy" and loaded.class_names == ["a", "b", "c", "d"]
    assert loaded.test_accuracy == 0.5 and loaded.fingerprint() == model.fingerprint()
    old = tmp_path / "old.safetensors"
    save_file(
        {"x": torch.zeros(1)}, old, metadata={"format": "fashiongen-featnet/1", "dataset": "toy"}
    )
    with pytest.raises(ConfigError, match="predates the texture-aware metric"):
        load_featnet_file(old)
    path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="unreadable"):
        load_featnet_file(path)


def test_missing_featnet_names_the_train_command():
    with pytest.raises(ConfigError, match="fashiongen featnet train --dataset mnist"):
        load_featnet("mnist")


def test_train_featnet_on_a_dataset_name(tmp_path):
    lines: list[str] = []
    model = train_featnet(
        "synthetic",
        epochs=1,
        seed=0,
        log=lines.append,
        command="test",
        widths=(8, 16, 24),
        feature_dim=32,
    )
    path = tmp_path / "cache" / "fashiongen" / "featnets" / "synthetic.safetensors"
    assert path.is_file() and "saved" in lines[-1]
    loaded = load_featnet("synthetic")  # found in the user cache dir
    assert loaded.fingerprint() == model.fingerprint()
    assert loaded.widths == (8, 16, 24) and loaded.metric_dim == 32 + 2 * (8 + 16)
    assert float(loaded.texture_scale) != 1.0  # standardised on the training split
    for key in ("test_accuracy", "seed", "epochs", "command", "date", "class_names"):
        assert key in loaded.metadata
    assert loaded.metadata["command"] == "test" and loaded.metadata["use_flips"] == "true"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHIPPED.is_file() and (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file()),
    reason="shipped featnet or Fashion-MNIST files absent",
)
def test_shipped_featnet_reaches_93_percent_on_the_real_test_set():
    from fashiongen.data import load_dataset

    model = load_featnet("fashion-mnist")
    test = load_dataset("fashion-mnist", "test")
    assert SHIPPED.stat().st_size <= 5 * 2**20
    assert accuracy(model, test.images, test.labels) >= 0.93
    assert float(model.metadata["test_accuracy"]) >= 0.93
    assert model.class_names == list(test.class_names)
