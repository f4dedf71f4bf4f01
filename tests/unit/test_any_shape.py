"""Every family trains and samples at the dataset's shape: RGB image folders at 32 and 64 px."""

import numpy as np
import pytest
from PIL import Image

from fashiongen.cli import main
from fashiongen.models import MODELS


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """Two classes of coloured squares and discs, 48x48 RGB PNGs."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for name in ("squares", "discs"):
        (root / name).mkdir()
        for i in range(20):
            picture = np.zeros((48, 48, 3), np.uint8)
            colour = rng.integers(64, 256, 3)
            yy, xx = np.mgrid[:48, :48]
            if name == "squares":
                picture[12:36, 12:36] = colour
            else:
                picture[(yy - 24) ** 2 + (xx - 24) ** 2 < 144] = colour
            Image.fromarray(picture).save(root / name / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", list(MODELS))
def test_family_on_rgb_folder(name, size, rgb_folder, tmp_path):
    run = tmp_path / "run"
    data = ["--data", f"folder:{rgb_folder}", "--set", f"data.image_size={size}"]
    tiny = [
        "--max-steps",
        "2",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.num_grid_samples=4",
        "--set",
        "train.use_tensorboard=false",
        "--no-progress",
    ]
    if name == "distilled":  # a student of a DDPM trained on the same pictures
        teacher = ["train", "--model", "ddpm", *data, *tiny, "--out", str(tmp_path / "teacher")]
        assert main([*teacher, "--set", "sample.num_steps=2", "--set", "model.num_classes=2"]) == 0
        args = ["distill", str(tmp_path / "teacher"), "--steps", "1", *tiny]
    else:
        args = ["train", "--model", name, *data, *tiny, "--set", "sample.num_steps=2"]
        args += ["--set", "model.num_classes=2"]
    assert main([*args, "--out", str(run)]) == 0
    out = tmp_path / "s.npz"
    assert (
        main(["sample", str(run), "--num-samples", "3", "--class", "discs", "--out", str(out)]) == 0
    )
    with np.load(out) as data:
        assert data["images"].shape == (3, 3, size, size)
        assert set(data["labels"].tolist()) == {0}
