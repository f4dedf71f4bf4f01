"""One set of rules for every command (issue 17): each command that reads a model takes a zoo
name, a run folder or a checkpoint file the same way (MODEL, or `--model NAME` of the zoo),
a bad path is one line and exit 2 with nothing written, `--data` (alias `--dataset`) names a
dataset everywhere, and global flags go before or after the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fashiongen.cli import build_parser, main
from fashiongen.web.studio import Studio

TINY = [
    "--data",
    "synthetic",
    "--max-steps",
    "3",
    "--no-progress",
    "--set",
    "train.compile=false",
    "--set",
    "model.num_classes=10",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.num_grid_samples=16",
    "--set",
    "train.use_tensorboard=false",
    "--set",
    "sample.num_steps=2",
]

# Each command that reads a model: its arguments given (model, ddpm model, output path).
# eval and compare score against the synthetic set with an untrained feature net (fast).
READERS = {
    "sample": lambda m, d, out: ["sample", m, "--num-samples", 4, "--out", out / "g.png"],
    "export": lambda m, d, out: ["export", m, "--out", out / "onnx"],
    "synth": lambda m, d, out: ["synth", m, "--num-samples", 10, "--out", out / "synth"],
    "eval": lambda m, d, out: [
        "eval",
        m,
        "--num-samples",
        20,
        "--data",
        "synthetic",
        "--json",
        out / "e.json",
    ],
    "visualize": lambda m, d, out: ["visualize", m, "--out", out / "pictures"],
    "compare": lambda m, d, out: [
        "compare",
        m,
        d,
        "--num-samples",
        20,
        "--data",
        "synthetic",
        "--out",
        out / "report",
    ],
    "combine": lambda m, d, out: ["combine", m, d, "--out", out / "mix"],
}
WRITES = {
    "sample": "g.png",
    "export": "onnx",
    "synth": "synth",
    "eval": "e.json",
    "visualize": "pictures",
    "compare": "report",
    "combine": "mix",
}
SINGLE = ("sample", "export", "synth", "eval", "visualize")  # these take --model NAME too


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    runs = {"gan": root / "dcgan", "ddpm": root / "ddpm"}
    assert (
        main(
            [
                "train",
                "--model",
                "dcgan",
                "--out",
                str(runs["gan"]),
                *TINY,
                "--set",
                "model.g_width=8",
                "--set",
                "model.d_width=8",
                "--set",
                "model.latent_dim=8",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--model",
                "ddpm",
                "--out",
                str(runs["ddpm"]),
                *TINY,
                "--set",
                "model.base_width=8",
            ]
        )
        == 0
    )
    return runs


@pytest.fixture(autouse=True)
def _featnet(fake_featnet):
    return fake_featnet


def _sources(kind: str, runs: dict[str, Path]) -> tuple[str, str]:
    if kind == "zoo":
        return "gan", "ddpm"
    if kind == "run folder":
        return str(runs["gan"]), str(runs["ddpm"])
    return (
        str(runs["gan"] / "final" / "weights.safetensors"),
        str(runs["ddpm"] / "final" / "weights.safetensors"),
    )


@pytest.mark.parametrize("kind", ["zoo", "run folder", "checkpoint"])
@pytest.mark.parametrize("command", sorted(READERS))
def test_every_command_reads_a_zoo_name_a_run_and_a_checkpoint(
    command, kind, tiny_runs, tmp_path, capsys
):
    model, ddpm = _sources(kind, tiny_runs)
    args = READERS[command](model, ddpm, tmp_path)
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert (tmp_path / WRITES[command]).exists()


@pytest.mark.parametrize("command", SINGLE)
def test_single_model_commands_take_model_name(command, tmp_path, capsys):
    args = READERS[command]("gan", "ddpm", tmp_path)
    args = [args[0], "--model", "gan", *args[2:]]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert (tmp_path / WRITES[command]).exists()


@pytest.mark.parametrize("command", sorted(READERS))
def test_a_bad_path_is_one_line_and_nothing_written(command, tiny_runs, tmp_path, capsys):
    args = READERS[command](str(tmp_path / "no" / "such"), str(tiny_runs["ddpm"]), tmp_path)
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no such" in err
    assert not (tmp_path / WRITES[command]).exists()


def test_an_unknown_bare_name_lists_the_zoo(capsys):
    assert main(["sample", "nope", "--out", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "nor a zoo model" in err and "ddpm" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", SINGLE)
def test_model_and_a_path_together_are_refused(command, tmp_path, capsys):
    args = READERS[command]("gan", "ddpm", tmp_path)
    assert main([str(a) for a in [args[0], "gan", "--model", "gan", *args[2:]]]) == 2
    assert "takes one model" in capsys.readouterr().err


def test_the_web_studio_takes_the_same_sources(tiny_runs):
    model, _ = _sources("checkpoint", tiny_runs)
    studio = Studio({"zoo": "gan", "run": tiny_runs["gan"], "checkpoint": model})
    for key in ("zoo", "run", "checkpoint"):
        assert studio.generate_grid(key, "any", 0, 2, "ddim", 2, 1.0, 0.5).image.width > 0


def test_one_dataset_flag_with_its_old_spelling():
    parser = build_parser()
    for command in (
        ["eval", "gan"],
        ["cas", "dir"],
        ["compare", "gan", "--out", "r"],
        ["featnet", "train"],
        ["train"],
    ):
        for flag in ("--data", "--dataset"):
            assert parser.parse_args([*command, flag, "mnist"]).data == "mnist"


@pytest.mark.parametrize(
    "argv", [["--debug", "zoo"], ["zoo", "--debug"], ["data", "info", "--debug"]]
)
def test_global_flags_before_or_after_the_command(argv):
    assert build_parser().parse_args(argv).debug is True


def test_global_flags_default_off():
    assert build_parser().parse_args(["zoo"]).debug is False


def test_visualize_of_a_zoo_model_needs_out(capsys):
    assert main(["visualize", "gan"]) == 2
    assert "is a zoo model: give --out DIR" in capsys.readouterr().err
