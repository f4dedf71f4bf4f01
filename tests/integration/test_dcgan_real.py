"""Integration: the CLI on real Fashion-MNIST (train a few steps, sample, resume exactly)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fashiongen.cli import main
from fashiongen.data.sources import resolve_idx_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        resolve_idx_dir("fashion-mnist") is None, reason="Fashion-MNIST not available offline"
    ),
]
SMALL = [
    "--set",
    "model.g_width=16",
    "--set",
    "model.d_width=16",
    "--no-progress",
    "--set",
    "train.checkpoint_every_n_steps=20",
    "--set",
    "train.use_tensorboard=false",
]


def test_train_sample_resume_on_fashion_mnist(tmp_path):
    one_go = tmp_path / "one_go"
    # the dcgan preset compiles its networks: resuming a compiled run is exact too
    assert (
        main(["train", "--model", "dcgan", "--max-steps", "40", "--out", str(one_go), *SMALL]) == 0
    )
    assert (one_go / "samples").glob("*.png")
    assert (one_go / "loss_curves.png").is_file()

    split = tmp_path / "split"
    assert (
        main(["train", "--model", "dcgan", "--max-steps", "20", "--out", str(split), *SMALL]) == 0
    )
    assert (
        main(["train", "--resume", "--max-steps", "40", "--out", str(split), "--no-progress"]) == 0
    )
    a = load_file(one_go / "final" / "weights.safetensors")
    b = load_file(split / "final" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run must equal the one-go run"

    out = tmp_path / "samples.npz"
    assert main(["sample", str(one_go), "--num-samples", "16", "--out", str(out)]) == 0
    with np.load(out) as data:
        images = data["images"]
    assert images.shape == (16, 1, 28, 28)
    assert images.std() > 5, "samples are not constant"
