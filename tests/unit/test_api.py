"""The public API (`import fashiongen`): load, sample with the checkpoint's own settings,
train, evaluate, compare, the zoo listing; the same bytes as the CLI."""

from __future__ import annotations

import dataclasses
import importlib.resources
import subprocess
import sys

import numpy as np
import pytest
import torch

import fashiongen
from fashiongen.cli import main
from fashiongen.config import SampleConfig
from fashiongen.data.synthetic import CLASS_NAMES
from fashiongen.errors import ConfigError
from fashiongen.generate import generate


@pytest.fixture(scope="module")
def ddpm() -> fashiongen.Model:
    return fashiongen.load("ddpm")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("api") / "run"
    return fashiongen.train(
        "dcgan-quick",
        out_dir=str(out),
        data={"name": "synthetic"},
        model={"num_classes": 10, "g_width": 8, "d_width": 8},
        train={
            "max_steps": 3,
            "compile": False,
            "batch_size": 32,
            "num_grid_samples": 16,
            "use_tensorboard": False,
        },
    )


def test_the_public_names_exist_and_train_stays_the_function():
    import fashiongen.training  # noqa: F401 - importing the loop must not rebind the name

    for name in fashiongen.__all__:
        assert hasattr(fashiongen, name), name
    assert callable(fashiongen.train) and fashiongen.train is fashiongen.api.train


def test_the_package_is_typed():
    assert importlib.resources.files("fashiongen").joinpath("py.typed").is_file()


def test_zoo_listing_names_what_load_takes():
    zoo = fashiongen.zoo_models()
    assert {"gan", "ddpm"} <= zoo.keys() and zoo["ddpm"]["family"] == "ddpm"


def test_sample_uses_the_checkpoints_settings_as_the_cli_does(ddpm, tmp_path):
    samples = ddpm.sample(4, classes="sneaker", seed=3)
    assert samples.images.shape == (4, 1, 28, 28) and samples.images.dtype == np.uint8
    assert samples.labels.tolist() == [7] * 4 and samples.class_names[7] == "Sneaker"
    assert (
        main(
            [
                "sample",
                "--model",
                "ddpm",
                "--num-samples",
                "4",
                "--class",
                "sneaker",
                "--seed",
                "3",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "s.npz") as cli:
        assert np.array_equal(cli["images"], samples.images)


def test_generate_defaults_to_the_checkpoints_settings(ddpm):
    own = generate(ddpm.network, 2, seed=1, sampling=ddpm.sampling)
    assert torch.equal(generate(ddpm.network, 2, seed=1), own)
    assert ddpm.sampling != SampleConfig()  # so the library defaults would differ
    assert not torch.equal(
        generate(ddpm.network, 2, seed=1, sampling=SampleConfig(num_steps=ddpm.sampling.num_steps)),
        own,
    )


def test_overrides_change_only_what_they_name(ddpm):
    assert ddpm.sampling_with(steps=5) == dataclasses.replace(ddpm.sampling, num_steps=5)
    fast = ddpm.sample(2, seed=0, steps=2)
    assert not np.array_equal(fast.images, ddpm.sample(2, seed=0).images)
    with pytest.raises(ConfigError, match="num_steps"):
        ddpm.sample(1, steps=10_000)


def test_per_class_grid_and_helpers(tmp_path):
    gan = fashiongen.load("gan")
    samples = gan.sample(20, per_class=True)
    assert samples.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert samples.to_pil().size == (2 * 30 + 2, 10 * 30 + 2)
    assert samples.to_pil(0, scale=2).size == (56, 56)
    path = samples.save(tmp_path / "s.npz")
    with np.load(path) as saved:
        assert np.array_equal(saved["labels"], samples.labels)
    strip = gan.interpolate(0, 9, num_frames=5, class_name="dress")
    assert len(strip) == 5 and strip.labels.tolist() == [3] * 5


def test_unknown_class_and_unconditional_models_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown class 'hat'"):
        fashiongen.load("gan").sample(1, classes="hat")
    with pytest.raises(ConfigError, match="unconditional"):
        fashiongen.load("gan-uncond").sample(1, classes="bag")


def test_train_then_load_a_run_folder_and_a_checkpoint(tiny_run):
    assert tiny_run.family == "dcgan" and tiny_run.steps == 3
    assert tiny_run.stop_reason == "train.max_steps=3"
    for source in (tiny_run.run_dir, tiny_run.final_checkpoint / "weights.safetensors"):
        model = fashiongen.load(source)
        assert model.family == "dcgan" and model.class_names == list(CLASS_NAMES)
        assert model.sample(3, seed=2).images.shape == (3, 1, 28, 28)


def test_evaluate_and_compare(tiny_run, tmp_path, fake_featnet):
    model = fashiongen.load(tiny_run.run_dir)
    by_model = fashiongen.evaluate(model, num_samples=20, use_memorisation=False)
    samples = model.sample(20, classes=list(range(10)))
    by_samples = fashiongen.evaluate(samples, dataset="synthetic", use_memorisation=False)
    assert by_model["num_samples"] == by_samples["num_samples"] == 20
    assert by_model["fid"] == pytest.approx(by_samples["fid"])  # the same balanced draw
    with pytest.raises(ConfigError, match="trained on different datasets"):
        fashiongen.compare([tiny_run.run_dir, "gan"], tmp_path / "r", num_samples=20)
    report = fashiongen.compare(
        [tiny_run.run_dir, "gan"], tmp_path / "r", num_samples=20, dataset="synthetic"
    )
    assert report.name == "report.html" and report.is_file()


def test_import_is_quiet():
    done = subprocess.run(
        [sys.executable, "-c", "import fashiongen"], capture_output=True, text=True, check=True
    )
    assert done.stdout == done.stderr == ""
