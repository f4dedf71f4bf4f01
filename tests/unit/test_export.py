"""ONNX export and the onnxruntime sampling backend, for every family."""

import pytest
import torch

from fashiongen.cli import main
from fashiongen.config import config_from_dict
from fashiongen.generate import generate
from fashiongen.models import MODELS, build_model

pytest.importorskip("onnxruntime")
from fashiongen.export import OnnxNetwork, export_onnx, use_onnx  # noqa: E402


def _build(name, num_classes):
    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "model": {"name": name, "num_classes": num_classes},
            "sample": {"num_steps": 3, "guidance_scale": 1.5, "strength": 0.3, "precision": "fp32"},
        }
    )  # as onnx
    return build_model(cfg.model, (1, 28, 28)).eval(), cfg


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_backend_draws_the_same_images(name, num_classes, tmp_path):
    model, cfg = _build(name, num_classes)
    expected = generate(model, 12, seed=5, sampling=cfg.sample)
    use_onnx(model, tmp_path)
    swapped = [m for m in model.modules() if isinstance(m, OnnxNetwork)]
    assert len(swapped) == len(model.ema_module_names)
    got = generate(model, 12, seed=5, sampling=cfg.sample)
    # float32 in two runtimes: at most one grey level apart, on a handful of pixels
    assert (got.int() - expected.int()).abs().max() <= 1
    assert (got != expected).float().mean() < 1e-3


def test_export_is_cached_per_weights(tmp_path):
    model, _ = _build("gan", 0)
    model.train()
    first = export_onnx(model, tmp_path)
    assert model.training and model.generator.training
    assert list(first) == ["generator"] and first["generator"].is_file()
    stamp = first["generator"].stat().st_mtime_ns
    assert export_onnx(model, tmp_path) == first
    assert first["generator"].stat().st_mtime_ns == stamp, "same weights: not exported again"
    with torch.no_grad():
        next(model.generator.parameters()).add_(1.0)
    changed = export_onnx(model, tmp_path)
    assert changed["generator"] != first["generator"]
    assert not list(tmp_path.glob(".*")), "no temporary files left"


def test_batch_size_is_dynamic(tmp_path):
    model, cfg = _build("vae", 0)
    use_onnx(model, tmp_path)
    for count in (1, 7, 130):
        assert model.sample(count, generator=torch.Generator().manual_seed(0)).shape[0] == count


def test_cli_sample_with_onnx_backend(make_config, tmp_path, capsys, monkeypatch):
    from fashiongen.training import train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = make_config({"name": "dcgan", "num_classes": 10}, train={"max_steps": 2})
    run = train(cfg, progress=False).run_dir
    assert (
        main(
            [
                "sample",
                str(run),
                "--class",
                "ring",
                "--num-samples",
                "6",
                "--seed",
                "2",
                "--out",
                str(tmp_path / "torch.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                str(run),
                "--class",
                "ring",
                "--num-samples",
                "6",
                "--seed",
                "2",
                "--backend",
                "onnx",
                "--out",
                str(tmp_path / "onnx.npz"),
            ]
        )
        == 0
    )
    import numpy as np

    a, b = np.load(tmp_path / "torch.npz"), np.load(tmp_path / "onnx.npz")
    assert (b["labels"] == 4).all() and np.array_equal(a["labels"], b["labels"])
    assert np.abs(a["images"].astype(int) - b["images"].astype(int)).max() <= 1
    assert list((tmp_path / "cache" / "fashiongen" / "onnx").glob("generator-*.onnx"))


def test_cli_export_writes_loadable_onnx(make_config, tmp_path, capsys):
    import numpy as np
    import onnxruntime

    from fashiongen.checkpoint import load_model
    from fashiongen.training import train

    run = train(
        make_config({"name": "vae", "width": 8}, train={"max_steps": 2}), progress=False
    ).run_dir
    assert main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 0
    (path,) = (tmp_path / "onnx").glob("decoder-*.onnx")
    assert f"wrote decoder: {path}" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    assert [i.name for i in session.get_inputs()] == ["z"]
    assert [o.name for o in session.get_outputs()] == ["image"]
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["family"] == "vae" and metadata["value_range"] == "[-1, 1]"
    model, _ = load_model(run)
    with torch.no_grad():
        expected = model.decoder(torch.from_numpy(z), None).numpy()
    np.testing.assert_allclose(session.run(None, {"z": z})[0], expected, atol=1e-4)


def test_cli_export_needs_one_source(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path)]) == 2
    assert (
        "export takes one model: a zoo name, run folder or checkpoint, or --model NAME"
        in capsys.readouterr().err
    )
