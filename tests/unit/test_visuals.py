"""Run pictures: every family interpolates; the VAE also reconstructs and traverses."""

import pytest
import torch
from PIL import Image

from fashiongen.config import config_from_dict
from fashiongen.data import load_dataset
from fashiongen.models import MODELS, build_model
from fashiongen.visuals import NUM_FRAMES, NUM_PATHS, write_run_visuals


@pytest.mark.parametrize("name", list(MODELS))
def test_pictures_written_by_capability(name, tmp_path):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": name, "num_classes": 10}, "sample": {"num_steps": 2}})
    model = build_model(cfg.model, (1, 28, 28))
    test = load_dataset("synthetic", "test")
    written = {
        p.name
        for p in write_run_visuals(model, tmp_path, test.images, test.labels, sampling=cfg.sample)
    }
    expected = {"interpolation.png"}
    if name == "vae":
        expected |= {"reconstructions.png", "latent_traversal.png"}
    assert written == expected
    width, height = Image.open(tmp_path / "interpolation.png").size
    assert (width, height) == (2 * (NUM_FRAMES * 30 + 2), 2 * (NUM_PATHS * 30 + 2))
