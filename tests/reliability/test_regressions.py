"""The defects of issue 13, one test each: commands that destroyed or mixed a user's files,
and what failed only when read (a hybrid that cannot sample with its own settings, a port
out of range).

The rest of the issue is checked per command in test_outputs.py, test_run_lock.py and
test_limits.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from reliability_helpers import (
    SUBPROCESS_TIMEOUT_S,
    TRAIN,
    child_env,
    hidden_temporaries,
    snapshot,
    train_run,
    visible,
)

from fashiongen.checkpoint import load_model, save_checkpoint
from fashiongen.models import build_model
from fashiongen.samples import read_samples


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """A second tiny model, with other weights than `artefacts.run`."""
    return train_run(
        tmp_path_factory.mktemp("other") / "run",
        "--max-steps",
        "2",
        "--seed",
        "7",
        "--set",
        "model.num_classes=10",
    )


# ---------------------------------------------------------------- nothing destroyed


def test_combine_into_an_existing_run_keeps_the_run(artefacts, tmp_path, cli):
    """`combine GAN DDPM --out runs/gan` used to replace the whole run by one weights file."""
    run = train_run(tmp_path / "runs" / "gan", "--max-steps", "2")
    before = snapshot(tmp_path)
    line = cli("combine", artefacts.run, artefacts.ddpm, "--out", run).one_error_line()
    assert line == (
        f"error: {run} already exists and holds a training run: pass --overwrite "
        "to replace it, or choose another path"
    )
    assert snapshot(tmp_path) == before


def test_combine_onto_an_existing_file_keeps_the_file(artefacts, tmp_path, cli):
    """`--out notes.txt` used to turn the file into a folder, the text surviving only as a
    hidden temporary."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    line = cli("combine", artefacts.run, artefacts.ddpm, "--out", notes).one_error_line()
    assert f"{notes} already exists: pass --overwrite" in line
    assert snapshot(tmp_path) == {"notes.txt": b"my notes\n"}


def test_train_into_a_users_folder_keeps_their_files(tmp_path, cli):
    """`train --out myproject` used to overwrite config.toml, summary.json and samples/."""
    project = tmp_path / "myproject"
    (project / "samples").mkdir(parents=True)
    for name in ("config.toml", "summary.json", "samples/mine.png"):
        (project / name).write_text(f"the user's {name}\n")
    before = snapshot(tmp_path)
    line = cli(*TRAIN, "--max-steps", "2", "--out", project).one_error_line()
    assert f"{project} already exists and is not empty, and is not a run: pass --overwrite" in line
    assert snapshot(tmp_path) == before
    resumed = cli(*TRAIN, "--resume", "--out", project).one_error_line()
    assert "nothing to resume: no checkpoints" in resumed
    assert snapshot(tmp_path) == before, "not even a lock file is left"


def test_train_resume_into_its_own_run_is_allowed(tmp_path, cli):
    run = train_run(tmp_path / "run", "--max-steps", "2")
    assert cli(*TRAIN, "--resume", "--out", run, "--max-steps", "4").code == 0
    assert load_model(run)[1].step == 4


def test_train_overwrite_replaces_a_run_once_the_new_one_is_complete(tmp_path, cli):
    run = train_run(tmp_path / "run", "--max-steps", "2")
    leftover = tmp_path / ".run.overwrite.tmp"  # what a SIGKILLed `train --overwrite` leaves
    (leftover / "checkpoints").mkdir(parents=True)
    assert cli(*TRAIN, "--overwrite", "--max-steps", "3", "--out", run).code == 0
    assert load_model(run)[1].step == 3
    assert visible(tmp_path) == ["run"] and hidden_temporaries(tmp_path) == []


def test_an_interrupted_train_overwrite_keeps_the_old_run(tmp_path, cli, monkeypatch):
    from fashiongen.models.dcgan import DCGAN

    run = train_run(tmp_path / "run", "--max-steps", "2")
    before = snapshot(tmp_path)
    real_step = DCGAN.train_step
    calls = []

    def step(self, batch, optimizers):
        calls.append(None)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, as the training loop sees it
        return real_step(self, batch, optimizers)

    monkeypatch.setattr(DCGAN, "train_step", step)
    result = cli(*TRAIN, "--overwrite", "--max-steps", "10", "--out", run)
    assert result.code == 130
    assert result.err == (
        f"interrupted before the new run was complete: {run} keeps its "
        "previous content; run the command again to start afresh\n"
    )
    assert snapshot(tmp_path) == before, "the old run, exactly; no staging folder left"


def test_sample_twice_into_one_folder_never_mixes_models(artefacts, other_run, tmp_path, cli):
    """`sample --out dir/` twice with different models used to leave one folder of mixed
    images that `eval dir/` scored as one set."""
    out = f"{tmp_path / 'dir'}/"
    assert cli("sample", artefacts.run, "--num-samples", "6", "--out", out).code == 0
    before = snapshot(tmp_path)
    line = cli("sample", other_run, "--num-samples", "4", "--out", out).one_error_line()
    assert "dir already exists and is not empty: pass --overwrite" in line
    assert snapshot(tmp_path) == before
    assert cli("sample", other_run, "--num-samples", "4", "--out", out, "--overwrite").code == 0
    assert cli("sample", other_run, "--num-samples", "4", "--out", tmp_path / "ref.npz").code == 0
    assert len(list((tmp_path / "dir").glob("*.png"))) == 4, "only the second model's images"
    with np.load(tmp_path / "ref.npz") as ref:
        assert np.array_equal(read_samples(tmp_path / "dir").images.numpy(), ref["images"])


@pytest.mark.slow
def test_a_killed_sample_to_a_png_folder_leaves_no_visible_png(artefacts, tmp_path):
    """SIGKILLed while writing thousands of PNGs, `sample --out dir/` used to leave them
    visible; now only a hidden temporary holds them until all are written."""
    out = tmp_path / "dir"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashiongen",
            "sample",
            str(artefacts.run),
            "--num-samples",
            "5000",
            "--out",
            f"{out}/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    try:  # kill once some PNGs are written, mid-way through the set
        while not any(True for t in hidden_temporaries(tmp_path) for _ in t.glob("*.png")):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL
    assert visible(tmp_path) == [] and not out.exists()
    assert hidden_temporaries(tmp_path), "the partial set sits in its hidden temporary"


# ---------------------------------------------------------------- checked when written


def test_combine_refuses_a_strength_beyond_its_max(artefacts, tmp_path, cli):
    """`combine --strength 0.9 --max-strength 0.5` used to write a hybrid that cannot sample
    with its own defaults."""
    line = cli(
        "combine",
        artefacts.run,
        artefacts.ddpm,
        "--strength",
        "0.9",
        "--max-strength",
        "0.5",
        "--out",
        tmp_path / "h",
    ).one_error_line()
    assert line == (
        "error: the hybrid would not sample with its own settings: sample.strength "
        "must lie in 0..0.5 for this hybrid (its refiner learned t <= 499)"
    )
    assert snapshot(tmp_path) == {}


def _resaved(source, folder, *, image_shape=None, num_classes=None, extra=None):
    """`source`'s checkpoint saved again with another image shape, class count or record."""
    model, checkpoint = load_model(source)
    config = checkpoint.config
    if image_shape or num_classes is not None:
        changed = dataclasses.replace(
            config.model,
            num_classes=config.model.num_classes if num_classes is None else num_classes,
        )
        config = dataclasses.replace(config, model=changed)
        model = build_model(changed, image_shape or model.image_shape)
    record = {**json.loads(checkpoint.metadata["extra"]), **(extra or {})}
    return save_checkpoint(folder, model=model, config=config, step=1, extra=record)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_shape": (1, 32, 32)}, r"image shapes differ: \(1, 28, 28\) vs \(1, 32, 32\)"),
        ({"num_classes": 0}, r"both models must have the same model\.num_classes"),
        (
            {"extra": {"dataset": "mnist", "class_names": [str(i) for i in range(10)]}},
            r"was trained on synthetic but .* on mnist: combine models of one dataset",
        ),
        (
            {"extra": {"dataset": "synthetic", "class_names": [f"c{i}" for i in range(10)]}},
            r"have different classes \(hbar, vbar, .* vs c0, c1, ",
        ),
    ],
    ids=["shape", "classes", "dataset", "class names"],
)
def test_combine_refuses_models_that_do_not_fit_together(change, message, artefacts, tmp_path, cli):
    refiner = _resaved(artefacts.ddpm, tmp_path / "in" / "ddpm", **change)
    line = cli("combine", artefacts.run, refiner, "--out", tmp_path / "h").one_error_line()
    assert re.search(message, line), line
    assert visible(tmp_path) == ["in"]


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_serve_refuses_a_port_out_of_range(port, cli):
    """`serve --port 70000` and `--port -1` used to end in tracebacks."""
    assert cli("serve", "--port", port).one_error_line() == (
        f"error: --port must be between 1 and 65535, got {port}"
    )
