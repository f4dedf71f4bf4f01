"""Checks before work (issue 17): `train --model all` and `compare` refuse what they would
fail on later (a dataset without a feature network, models of different datasets) before
the first step of training or sampling."""

from __future__ import annotations

import pytest

from fashiongen.cli import main

TINY = [
    "--data",
    "synthetic",
    "--max-steps",
    "2",
    "--no-progress",
    "--set",
    "train.compile=false",
    "--set",
    "model.g_width=8",
    "--set",
    "model.d_width=8",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.num_grid_samples=16",
    "--set",
    "train.use_tensorboard=false",
]


def test_train_all_refuses_a_dataset_without_a_feature_network_before_training(tmp_path, capsys):
    out = tmp_path / "all"
    assert (
        main(
            [
                "train",
                "--model",
                "all",
                "--budget-minutes",
                "10",
                "--data",
                "synthetic",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "synthetic" in err and err.count("\n") == 1
    assert not out.exists()  # not one family trained


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("synth") / "dcgan"
    assert main(["train", "--model", "dcgan", "--out", str(run), *TINY]) == 0
    return run


def test_compare_of_models_of_different_datasets_fails_before_scoring(
    synthetic_run, tmp_path, capsys, monkeypatch
):
    scored = []
    monkeypatch.setattr("fashiongen.report.score_run", lambda *a, **k: scored.append(a))
    assert main(["compare", str(synthetic_run), "gan", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "trained on different datasets" in err and "--data NAME" in err
    assert scored == [] and not (tmp_path / "r").exists()


def test_compare_without_a_feature_network_fails_before_scoring(
    synthetic_run, tmp_path, capsys, monkeypatch
):
    scored = []
    monkeypatch.setattr("fashiongen.report.score_run", lambda *a, **k: scored.append(a))
    assert (
        main(["compare", str(synthetic_run), str(synthetic_run), "--out", str(tmp_path / "r")]) == 2
    )
    assert "synthetic" in capsys.readouterr().err and scored == []


def test_synth_checks_its_labeller_and_output_before_sampling(tmp_path, capsys, monkeypatch):
    run = tmp_path / "uncond"
    assert (
        main(
            ["train", "--model", "dcgan", "--out", str(run), *TINY, "--set", "model.num_classes=0"]
        )
        == 0
    )
    sampled = []
    monkeypatch.setattr("fashiongen.evaluation.generate", lambda *a, **k: sampled.append(a))
    # an unconditional model is labelled by the feature net, which synthetic data lacks
    assert main(["synth", str(run), "--num-samples", "10", "--out", str(tmp_path / "s")]) == 2
    assert "no feature network" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    assert main(["synth", "gan", "--num-samples", "10", "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sampled == [] and not (tmp_path / "s").exists()


def test_cas_checks_its_datasets_before_training(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(
        "fashiongen.metrics.featnet_training.fit_featnet", lambda *a, **k: trained.append(a)
    )
    synth = tmp_path / "s"
    assert (
        main(["synth", "gan", "--num-samples", "10", "--format", "npz", "--out", str(synth)]) == 0
    )
    assert main(["cas", str(synth), "--data", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err and trained == []
