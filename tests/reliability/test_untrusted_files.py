"""Untrusted files: weights only ever come from safetensors, training state from
`torch.load(weights_only=True)`; a malicious or foreign checkpoint is a one-line error (and,
on resume, a fallback to an older checkpoint), never code run or a crash deep in torch."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from reliability_helpers import TRAIN, copy_run, train_run
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fashiongen.checkpoint import STATE_FILE, WEIGHTS_FILE, load_checkpoint


class _Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny DCGAN run: step_0000004, step_0000008, final/ at step 12."""
    out = tmp_path_factory.mktemp("untrusted") / "run"
    return train_run(out, "--max-steps", "12", "--set", "train.checkpoint_every_n_steps=4")


@pytest.fixture
def run(run_dir, tmp_path) -> Path:
    return copy_run(run_dir, tmp_path / "run")


def _evil_pickle(marker: Path, protocol: int) -> bytes:
    return pickle.dumps({"step": 12, "evil": _Payload(marker)}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_state_on_resume_never_runs_and_falls_back(run, tmp_path, cli, protocol):
    marker = tmp_path / "PWNED"
    (run / "final" / STATE_FILE).write_bytes(_evil_pickle(marker, protocol))
    result = cli(*TRAIN, "--resume", "--out", run, "--max-steps", "14")
    assert result.code == 0, result.err
    assert not marker.exists(), "the pickled payload ran"
    warning, resumed = result.err.splitlines()[:2]
    assert warning.startswith(
        f"warning: training state {run / 'final' / STATE_FILE} is "
        "unreadable or unsafe and was not loaded (refused by the safe "
        "unpickler: "
    )
    assert "weights_only` set to `False`" not in warning, "never advise the unsafe load"
    assert resumed.endswith("step_0000008 (step 8)")


def test_malicious_state_without_an_older_checkpoint_is_one_error_line(run, tmp_path, cli):
    import shutil

    marker = tmp_path / "PWNED"
    shutil.rmtree(run / "checkpoints")
    (run / "final" / STATE_FILE).write_bytes(_evil_pickle(marker, 2))
    result = cli(*TRAIN, "--resume", "--out", run, "--max-steps", "14")
    assert result.code == 2 and not marker.exists()
    error = result.err.splitlines()[-1]
    assert error.startswith(f"error: no readable checkpoint in {run}: training state ")
    assert "Traceback" not in result.err


def test_pickled_weights_are_never_unpickled(run, tmp_path, cli):
    """A pickle posing as weights.safetensors (or a .pt next to it) is refused unread."""
    marker = tmp_path / "PWNED"
    weights = run / "final" / WEIGHTS_FILE
    weights.write_bytes(_evil_pickle(marker, 2))
    (run / "final" / "model.pt").write_bytes(_evil_pickle(marker, 2))
    result = cli("sample", run / "final", "--out", tmp_path / "g.png")
    assert "is unreadable or corrupt" in result.one_error_line()
    assert str(weights) in result.err
    assert not marker.exists()


def _tamper(weights: Path, **changes) -> None:
    """Rewrite a checkpoint's header metadata, keeping its tensors."""
    with safe_open(weights, "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    if "model" in changes:
        config["model"] = changes.pop("model")
        metadata["family"] = config["model"]["name"]
    metadata["config"] = json.dumps(config)
    metadata.update({k: json.dumps(v) for k, v in changes.items()})
    save_file(load_file(weights), weights, metadata=metadata)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": {"name": "vae"}}, "does not fit a vae"),
        ({"model": {"name": "ddpm", "base_width": 8}}, "does not fit a ddpm"),
        (
            {"model": {"name": "dcgan", "g_width": 16, "d_width": 8, "latent_dim": 8}},
            "does not fit a dcgan",
        ),
        ({"image_shape": [3, 32, 32]}, "does not fit a dcgan of shape (3, 32, 32)"),
        ({"model": {"name": "no-such-family"}}, "unknown model 'no-such-family'"),
        ({"image_shape": [1, -5, 28]}, "cannot build a dcgan"),
    ],
)
def test_sampling_a_foreign_checkpoint_is_a_clear_error(run, tmp_path, cli, changes, message):
    _tamper(run / "final" / WEIGHTS_FILE, **changes)
    result = cli("sample", run, "--num-samples", 4, "--out", tmp_path / "g.png")
    line = result.one_error_line()
    assert message in line and str(run / "final") in line
    assert not (tmp_path / "g.png").exists()


def test_resume_when_config_toml_names_another_model(run, cli):
    config = run / "config.toml"
    config.write_text(config.read_text().replace('name = "dcgan"', 'name = "vae"'))
    result = cli(*TRAIN, "--resume", "--out", run, "--max-steps", "14")
    line = result.one_error_line()
    assert f"{config} describes a vae model but checkpoint {run / 'final'} holds a dcgan" in line
    assert load_checkpoint(run / "final")[0].step == 12, "nothing was trained or written"


def test_resume_of_a_checkpoint_whose_config_names_another_model(run, cli):
    """Config (in the checkpoint and config.toml alike) says VAE; the tensors are a DCGAN's."""
    import shutil

    shutil.rmtree(run / "checkpoints")
    _tamper(run / "final" / WEIGHTS_FILE, model={"name": "vae", "width": 8})
    config = run / "config.toml"
    text = config.read_text()
    start = text.index("[model]")
    end = text.index("\n[", start + 1)
    config.write_text(text[:start] + '[model]\nname = "vae"\nwidth = 8\n' + text[end:])
    result = cli(*TRAIN, "--resume", "--out", run, "--max-steps", "14")
    assert "does not fit a vae" in result.one_error_line()


def test_state_of_another_model_is_a_clear_error(run, cli):
    """A readable state.pt whose optimizer state belongs to another network."""
    state = torch.load(run / "final" / STATE_FILE, weights_only=True)
    state["optimizers"]["generator"]["state"] = {
        0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}
    }
    state.pop("_sha256")
    torch.save(state, run / "final" / STATE_FILE)
    import shutil

    shutil.rmtree(run / "checkpoints")
    result = cli(*TRAIN, "--resume", "--out", run, "--max-steps", "14")
    assert "training state does not match this model" in result.one_error_line()


def test_zoo_export_keeps_a_valid_checksum(run, tmp_path):
    """Exporting re-saves the tensors as float16: the checksum must describe those."""
    from fashiongen.checkpoint import load_model
    from fashiongen.zoo.release import export

    path = export(run, "tiny", {"summary": "test"}, zoo_dir=tmp_path)
    model, checkpoint = load_model(path)
    assert checkpoint.step == 12 and model.image_shape == (1, 28, 28)
