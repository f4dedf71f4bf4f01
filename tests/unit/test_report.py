"""`fashiongen eval`, `compare` and `train --model all` on tiny synthetic runs (seconds).

evaluate() needs a feature network; the synthetic dataset has none, so these tests inject an
untrained FeatNet (numbers are meaningless, the plumbing is what is tested). The calibration
tests at the end use the real Fashion-MNIST featnet and data, and are marked slow.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen import evaluation, report
from fashiongen.cli import main
from fashiongen.data.synthetic import CLASS_NAMES
from fashiongen.errors import ConfigError, DataError
from fashiongen.nets.featnet import FeatNet
from fashiongen.training import budget
from tiny_runs import THREE_STEPS

NUM_SAMPLES = 30


def tiny_featnet() -> FeatNet:
    torch.manual_seed(0)
    net = FeatNet(len(CLASS_NAMES)).eval()
    net.class_names = list(CLASS_NAMES)
    return net


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A conditional DCGAN and an unconditional MLP GAN, 3 steps each on synthetic data."""
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test setting
    root = tmp_path_factory.mktemp("runs")
    out = {"cond": root / "dcgan-cond", "uncond": root / "gan"}
    assert (
        main(
            [
                "train",
                "--model",
                "dcgan",
                "--out",
                str(out["cond"]),
                "--set",
                "model.num_classes=10",
                *THREE_STEPS,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--model",
                "gan",
                "--out",
                str(out["uncond"]),
                "--set",
                "model.num_classes=0",
                *THREE_STEPS,
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def compared(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out / "cache"))
        html_path = report.compare_runs(
            [runs["cond"], runs["uncond"]],
            out / "report",
            num_samples=NUM_SAMPLES,
            featnet=tiny_featnet(),
            log=lambda _: None,
        )
    assert html_path == out / "report" / "report.html"
    return out / "report"


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def fake_featnet(monkeypatch):
    """What `load_featnet` returns inside evaluate(), for CLI runs on synthetic data."""
    net = tiny_featnet()
    monkeypatch.setattr("fashiongen.nets.featnet.load_featnet", lambda name: net)
    return net


# --- compare ---------------------------------------------------------------------------------


def test_markdown_has_one_row_per_run_with_every_column(compared):
    text = (compared / "report.md").read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| run |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [h for _, h, _ in report.COLUMNS]
    rows = [line for line in lines if line.startswith(("| dcgan-cond | dcgan |", "| gan | gan |"))]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(report.COLUMNS) and all(cells)
    cond, uncond = ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    columns = [key for key, _, _ in report.COLUMNS]
    assert cond[columns.index("conditional_accuracy")] != evaluation.MISSING
    assert uncond[columns.index("conditional_accuracy")] == evaluation.MISSING
    assert f"N = {NUM_SAMPLES} samples" in text and "synthetic test split, 160 images" in text
    for name in re.findall(r"\]\((images/[^)]+)\)", text):
        assert (compared / name).is_file()


def test_html_is_self_contained_and_embeds_images(compared):
    text = (compared / "report.html").read_text()
    assert not re.search(r"https?://", text)
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 5  # two sample grids, two loss curves, one plot
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in text and "<script" not in text and "url(" not in text


def test_json_holds_the_table(compared):
    data = json.loads((compared / "report.json").read_text())
    assert data["num_samples"] == NUM_SAMPLES and data["seed"] == 0
    assert [r["name"] for r in data["rows"]] == ["dcgan-cond", "gan"]
    for row in data["rows"]:
        assert set(data["columns"]) <= set(row)
        assert row["parameters"] > 0 and row["sample_images_per_second"] > 0
        # a GAN samples with its generator alone: its discriminator is trained, not sampled
        assert 0 < row["sampling_parameters"] < row["parameters"]
        assert row["fid"] >= 0 and 0 <= row["coverage"] <= 1
    assert data["references"][0]["count"] == 160


def test_a_zoo_model_is_named_and_costed_from_its_manifest(tmp_path):
    from fashiongen.zoo import manifest, zoo_path

    path = zoo_path("gan")
    assert report._unique_names([path, tmp_path / "gan"]) == ["gan (zoo)", "gan"]
    costs = report._training_summary(path, path.parent)
    assert costs["train_seconds"] == manifest()["gan"]["train_seconds"] > 0
    assert costs["device"] == manifest()["gan"]["device"]
    assert report._training_summary(tmp_path / "run", tmp_path) == {}  # unknown, noted


def test_report_has_the_per_class_columns_with_notes_on_what_they_leave_out(compared):
    text = (compared / "report.md").read_text()
    for header in ("class recall", "class coverage", "class spread"):
        assert (
            f" {header} |" in text
            and f"<th>{header}</th>" in (compared / "report.html").read_text()
        )
    cond, uncond = json.loads((compared / "report.json").read_text())["rows"]
    # 30 samples of 10 classes: 3 a class, fewer than the k + 1 = 6 a class needs
    assert cond["evaluation"]["per_class_num_samples"] == [3] * 10
    assert cond["per_class_recall"] is None and cond["intra_class_spread"] is None
    assert "- dcgan-cond: per-class metrics leave out classes with fewer than 6 samples" in text
    assert any("predicts" in note for note in uncond["evaluation"]["notes"])
    assert sum(uncond["evaluation"]["per_class_num_samples"]) == NUM_SAMPLES


def test_eval_reports_per_class_metrics_for_balanced_samples(runs):
    result = evaluation.evaluate_source(
        runs["cond"],
        num_samples=80,
        featnet=tiny_featnet(),
        dataset="synthetic",
        use_memorisation=False,
    )
    assert result["per_class_num_samples"] == [8] * 10
    for key in ("per_class_recall", "per_class_coverage", "intra_class_spread"):
        by_class = result[f"{key}_by_class"]
        assert len(by_class) == 10 and None not in by_class
        assert result[key] == pytest.approx(np.mean(by_class))
    printed = evaluation.format_evaluation(result)
    for header, key in (
        ("class recall", "per_class_recall"),
        ("class spread", "intra_class_spread"),
    ):
        assert re.search(rf"^{header}\s+{result[key]:.3f}\s", printed, re.MULTILINE)


def test_training_time_evaluation_logs_the_per_class_columns(make_config, monkeypatch):
    import importlib

    from fashiongen.training import train

    net = tiny_featnet()
    monkeypatch.setattr(
        importlib.import_module("fashiongen.metrics.evaluate"), "load_featnet", lambda name: net
    )
    cfg = make_config(
        model={"name": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 8, "num_classes": 10},
        train={"epochs": 1, "eval_every_n_epochs": 1, "eval_num_samples": 60},
    )
    run = train(cfg, progress=False).run_dir
    with open(run / "eval.csv", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert 0 <= float(row["eval_per_class_recall"]) <= 1
    assert 0 <= float(row["eval_per_class_coverage"]) <= 1
    assert float(row["eval_intra_class_spread"]) >= 0


def test_compare_cli_rejects_a_missing_run(runs, tmp_path, capsys):
    assert (
        main(["compare", str(runs["cond"]), str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err
    assert "no such checkpoint or run folder" in err and err.count("\n") == 1


# --- eval ------------------------------------------------------------------------------------


def test_eval_checkpoint_prints_table_and_writes_json(runs, tmp_path, fake_featnet, capsys):
    out = tmp_path / "sub" / "eval.json"
    assert main(["eval", str(runs["cond"]), "--num-samples", "20", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "N = 20" in printed and "synthetic test split, 160 images" in printed
    assert f"fingerprint {fake_featnet.fingerprint()}" in printed
    assert "balanced class labels" in printed
    result = json.loads(out.read_text())
    assert result["num_samples"] == 20 and result["source"]["kind"] == "checkpoint"
    assert result["conditional_accuracy"] is not None


def test_eval_npz_and_png_folder(runs, tmp_path):
    npz, folder = tmp_path / "s.npz", tmp_path / "pngs"
    assert (
        main(
            [
                "sample",
                str(runs["cond"]),
                "--num-samples",
                "12",
                "--class",
                "disc",
                "--out",
                str(npz),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                str(runs["cond"]),
                "--num-samples",
                "12",
                "--class",
                "ring",
                "--out",
                f"{folder}/",
            ]
        )
        == 0
    )
    net = tiny_featnet()
    from_npz = evaluation.evaluate_source(npz, featnet=net, dataset="synthetic")
    from_pngs = evaluation.evaluate_source(folder, featnet=net, dataset="synthetic", num_samples=10)
    assert from_npz["num_samples"] == 12 and from_pngs["num_samples"] == 10
    assert from_npz["source"]["kind"] == from_pngs["source"]["kind"] == "samples"
    assert from_npz["conditional_accuracy"] is not None
    assert from_pngs["conditional_accuracy"] is not None  # labels parsed from file names
    assert "sample set, with labels" in evaluation.format_evaluation(from_pngs)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"pictures": np.zeros((8, 1, 28, 28), np.uint8)}, "no 'images'"),
        ({"images": np.zeros((8, 1, 28, 28), np.float32)}, "must be uint8"),
        (
            {"images": np.zeros((8, 1, 28, 28), np.uint8), "labels": np.zeros(3, np.int64)},
            "'labels' must be 8",
        ),
    ],
)
def test_eval_bad_npz_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_eval_bad_inputs_are_one_line(runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.txt").write_text("hi")
    np.savez(tmp_path / "few.npz", images=np.zeros((8, 1, 28, 28), np.uint8))
    for argv, message in (
        (["eval", str(tmp_path / "missing")], "no such checkpoint"),
        (["eval", str(tmp_path / "empty")], "no PNG images"),
        (["eval", str(tmp_path / "x.txt")], "expected an .npz"),
        (["eval", str(tmp_path / "few.npz"), "--num-samples", "9"], "fewer than"),
        (["eval", str(runs["uncond"]), "--num-samples", "10"], "no feature network"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


# --- train --model all -----------------------------------------------------------------------


def test_train_all_cli_dry_run_uses_quick_presets_and_the_budget(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--model",
                "all",
                "--budget-minutes",
                "2",
                "--out",
                str(tmp_path),
                "--dry-run",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for family in ("dcgan", "ddpm", "gan", "hybrid", "vae"):
        assert f"# {family}\n" in printed
    assert printed.count("max_minutes = 2.0") == 5 and printed.count("seed = 3") == 5
    assert printed.count(f"epochs = {budget.BUDGET_EPOCHS}") == 5


def test_train_all_cli_passes_flags_to_the_library(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_train_all(budget, out, **kwargs):
        seen.update(budget=budget, out=out, **kwargs)
        return Path(out) / "report" / "report.html"

    monkeypatch.setattr(budget, "train_all", fake_train_all)
    assert (
        main(
            [
                "train",
                "--model",
                "all",
                "--budget-minutes",
                "0.5",
                "--out",
                str(tmp_path),
                "--data",
                "synthetic",
                "--set",
                "train.batch_size=32",
                "--no-progress",
            ]
        )
        == 0
    )
    assert seen["budget"] == 0.5 and seen["out"] == str(tmp_path) and not seen["progress"]
    assert seen["overrides"] == [("data.name", "synthetic"), "train.batch_size=32"]
    assert "report.html" in capsys.readouterr().out
    assert main(["train", "--model", "all"]) == 2
    assert "--budget-minutes" in capsys.readouterr().err


def test_train_all_trains_each_family_then_reports(tmp_path):
    overrides = [
        'data.name="synthetic"',
        "train.batch_size=32",
        "train.num_grid_samples=16",
        "train.use_tensorboard=false",
        "train.max_steps=2",
    ]
    lines: list[str] = []
    html_path = budget.train_all(
        0.001,
        tmp_path,
        families=["gan", "vae"],
        overrides=overrides,
        num_samples=20,
        featnet=tiny_featnet(),
        progress=False,
        log=lines.append,
    )
    assert html_path == tmp_path / "report" / "report.html" and html_path.is_file()
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    assert [r["family"] for r in rows] == ["gan", "vae"]
    for family in ("gan", "vae"):
        summary = json.loads((tmp_path / family / "summary.json").read_text())
        assert 1 <= summary["steps"] <= 2
    lines.clear()
    budget.train_all(
        0.001,
        tmp_path,
        families=["gan"],
        overrides=overrides,
        num_samples=20,
        featnet=tiny_featnet(),
        progress=False,
        log=lines.append,
    )
    assert any("already trained" in line for line in lines)


def test_family_configs_reject_bad_budgets_and_families(tmp_path):
    with pytest.raises(ConfigError, match="positive"):
        budget.family_configs(0, tmp_path)
    with pytest.raises(ConfigError, match="no quick preset"):
        budget.family_configs(1, tmp_path, families=["nope"])


def test_missing_source_raises_data_error(tmp_path):
    with pytest.raises(DataError):
        evaluation.evaluate_source(tmp_path / "missing")


# --- calibration on real data (slow; see benchmarks/calibrate_metrics.py for the rest) ------

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_file() and not (Path.home() / ".cache/fashiongen/fashion-mnist").is_dir(),
    reason="Fashion-MNIST files absent",
)


@pytest.fixture(scope="module")
def real():
    from fashiongen.data import load_dataset
    from fashiongen.nets.featnet import load_featnet

    return (
        load_dataset("fashion-mnist", "train"),
        load_dataset("fashion-mnist", "test"),
        load_featnet("fashion-mnist"),
    )


@pytest.mark.slow
@needs_fashion
def test_calibration_set_against_itself_scores_zero(real):
    from fashiongen.metrics import feature_stats, fid, kid, neighbour_metrics

    _, test, featnet = real
    features = featnet.features(test.images[:1000])
    mu, cov = feature_stats(features)
    assert fid(mu, cov, mu, cov) == pytest.approx(0, abs=1e-6)
    kid_mean, _ = kid(features, features, 10, 500, generator=torch.Generator().manual_seed(0))
    assert abs(kid_mean) < 1e-3
    scores = neighbour_metrics(features, features)
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0


@pytest.mark.slow
@needs_fashion
def test_calibration_one_class_collapses_recall_coverage_and_entropy(real):
    from fashiongen.metrics import class_metrics, neighbour_metrics

    train, test, featnet = real
    real_feats = featnet.features(test.images[:1000])
    one_class = train.images[train.labels == 1][:500]
    mixed = train.images[:500]
    collapsed = neighbour_metrics(real_feats, featnet.features(one_class))
    healthy = neighbour_metrics(real_feats, featnet.features(mixed))
    assert collapsed["recall"] < 0.2 < 0.6 < healthy["recall"]
    assert collapsed["coverage"] < 0.2 < 0.6 < healthy["coverage"]
    assert class_metrics(featnet.logits(one_class))["class_entropy"] < 0.3
    assert class_metrics(featnet.logits(mixed))["class_entropy"] > 2.0


@pytest.mark.slow
@needs_fashion
def test_calibration_training_copies_have_copy_rate_one(real):
    from fashiongen.metrics import copy_rate, copy_threshold, nearest_train_distances

    train, test, _ = real
    pool = train.images[:5000]
    threshold = copy_threshold(nearest_train_distances(test.images[:500], pool))
    assert copy_rate(nearest_train_distances(pool[:200], pool), threshold) == 1.0
    assert copy_rate(nearest_train_distances(test.images[500:700], pool), threshold) < 0.05
