"""docs/onnx.md's client runs with onnxruntime and numpy alone, and its images are the torch
sampler's (issue 17): the exported generation graph of a diffusion model, the named inputs
and outputs, and the metadata a client reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen.cli import main
from fashiongen.images import to_uint8

pytest.importorskip("onnxruntime")

DOC = Path(__file__).resolve().parents[2] / "docs" / "onnx.md"
(CLIENT,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
# Run first in the client's process: torch and fashiongen cannot be imported there.
NO_TORCH = "import sys\nsys.modules['torch'] = None\nsys.modules['fashiongen'] = None\n"


def run_client(folder: Path) -> np.ndarray:
    script = NO_TORCH + CLIENT + "\nnp.save('pixels.npy', pixels)\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return np.load(folder / "pixels.npy")


def saved(folder: Path, model_table: dict, sample: dict) -> Path:
    """An untrained model saved as a checkpoint (the graph, not the weights, is tested)."""
    from fashiongen.checkpoint import save_checkpoint
    from fashiongen.config import config_from_dict
    from fashiongen.models import build_model

    cfg = config_from_dict({"model": model_table, "data": {"name": "synthetic"}, "sample": sample})
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28))
    return save_checkpoint(folder / "checkpoint", model=model, config=cfg, step=0)


DDPM = {"name": "ddpm", "base_width": 8}
HYBRID = {"name": "hybrid", "gan": {"name": "dcgan", "g_width": 8, "d_width": 8}, "refiner": DDPM}
# a 2-call student: its checkpoint's sampling settings are what `fashiongen distill` writes
DISTILLED = {"name": "distilled", "base_width": 8, "steps": 2, "teacher_steps": 4}
SAMPLING = {"num_steps": 4, "sampler": "dpmpp_2m", "guidance_scale": 2.0, "strength": 0.4}


@pytest.mark.parametrize(
    ("model_table", "num_classes", "sample"),
    [
        (DDPM, 0, SAMPLING),
        (DDPM, 10, SAMPLING),
        (HYBRID, 10, SAMPLING),
        (DISTILLED, 10, {"num_steps": 2, "sampler": "ddim"}),
    ],
)
def test_the_documented_client_matches_the_torch_sampler(
    model_table, num_classes, sample, tmp_path, monkeypatch
):
    from fashiongen.checkpoint import load_model

    checkpoint = saved(tmp_path, {**model_table, "num_classes": num_classes}, sample)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "onnx")]) == 0
    pixels = run_client(tmp_path)

    model, loaded = load_model(checkpoint)
    rng = np.random.default_rng(0)  # the client's draws, in the order of its inputs
    latents = torch.from_numpy(rng.standard_normal((8, *model.latent_shape)).astype(np.float32))
    if model_table is HYBRID:  # its draft is noised with the client's `draft_noise`
        draft_noise = torch.from_numpy(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
        monkeypatch.setattr(model.refiner, "randn", lambda *shape, generator=None: draft_noise)
    labels = torch.arange(8) % 10 if num_classes else None
    with torch.no_grad():
        expected = to_uint8(
            model.generate_from_latents(latents, labels=labels, sampling=loaded.config.sample)
        )
    assert pixels.shape == (8, 1, 28, 28) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - expected.numpy().astype(int)).max() <= 1


def test_exports_name_their_inputs_and_outputs_and_carry_metadata(make_config, tmp_path):
    import onnxruntime

    from fashiongen.training import train

    cfg = make_config(
        {"name": "ddpm", "base_width": 8, "num_classes": 10},
        train={"max_steps": 2},
        sample={"num_steps": 3, "sampler": "ancestral"},
    )
    run = train(cfg, progress=False).run_dir
    assert main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 0
    (net,) = (tmp_path / "onnx").glob("net-*.onnx")
    session = onnxruntime.InferenceSession(str(net), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x_t", "timestep", "class_label"]
    assert [o.name for o in session.get_outputs()] == ["prediction"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["family"] == "ddpm" and meta["prediction"] in ("eps", "v")
    assert meta["recommended_sampler"] == "ancestral" and meta["recommended_num_steps"] == "3"
    assert len(json.loads(meta["class_names"])) == 10 and meta["null_class_label"] == "10"
    whole = onnxruntime.InferenceSession(
        str(tmp_path / "onnx" / "generate-3steps.onnx"), providers=["CPUExecutionProvider"]
    )
    # ancestral sampling draws noise at every step: the graph is unrolled with DDIM, eta 0
    assert whole.get_modelmeta().custom_metadata_map["sampler"] == "ddim"


def test_one_pass_families_export_no_generation_graph(make_config, tmp_path):
    from fashiongen.training import train

    run = train(
        make_config({"name": "vae", "width": 8}, train={"max_steps": 2}), progress=False
    ).run_dir
    assert main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 0
    assert [p.name.split("-")[0] for p in (tmp_path / "onnx").iterdir()] == ["decoder"]
