"""The `fashiongen` command line: parse, build a config, call one library function.

User errors print one line on stderr and exit with code 2 (`--debug` shows the traceback);
Ctrl-C during training saves a checkpoint and exits with code 130. Every command that writes
refuses an existing output unless given `--overwrite` (`fashiongen.files`), and every count
is bounded by the one limits table (`fashiongen.limits`).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import time
import typing
from pathlib import Path

import torch

from fashiongen import limits
from fashiongen.checkpoint import load_model, model_source, sampling_with, save_checkpoint
from fashiongen.config import (
    DEFAULT_GUIDE_SCALE,
    MAX_SEED,
    PRESETS_DIR,
    Override,
    RunConfig,
    config_from_dict,
    merge_overrides,
    preset_path,
    read_toml,
    to_toml,
)
from fashiongen.data import dataset_info, load_dataset, load_from_config
from fashiongen.device import select_device
from fashiongen.distill import DEFAULT_STEPS, distill_config, teacher_source
from fashiongen.edit import edit_command
from fashiongen.errors import ConfigError, FashiongenError, TrainingInterruptedError
from fashiongen.evaluation import evaluate_source, format_evaluation, write_json
from fashiongen.export import export_generation_graph, export_onnx, use_onnx
from fashiongen.files import cache_root, check_free, locked_if_run, staged_folder
from fashiongen.generate import check_can_sample, check_same_classes, sample_to
from fashiongen.metrics.featnet_training import train_featnet
from fashiongen.models.hybrid import combine
from fashiongen.nets.featnet import featnet_file_name
from fashiongen.precision import sampling_override
from fashiongen.samples import class_labels, class_names_of, parse_classes
from fashiongen.synth import classification_accuracy_score, format_cas, write_synthetic_dataset
from fashiongen.training import resolve_run_name, train
from fashiongen.training.state import resume_request
from fashiongen.version import __version__
from fashiongen.visuals import write_run_visuals
from fashiongen.web.app import serve
from fashiongen.zoo import ZOO_DIR, available, fast_version, manifest, zoo_path

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
_FULL_DISK = "free some disk space and run again (train --resume continues a run)"
_NOT_WRITABLE = "choose a writable place or change its permissions"
OS_ERROR_HINTS = {  # what to do about the OS errors a user can cause
    errno.ENOSPC: _FULL_DISK,
    errno.EDQUOT: _FULL_DISK,
    errno.EACCES: _NOT_WRITABLE,
    errno.EPERM: _NOT_WRITABLE,
    errno.EROFS: "the file system is read-only: choose another place",
    errno.ENOTDIR: "part of the path is a file, not a folder: choose another path",
    errno.ENOENT: "check the path",
    errno.EISDIR: "the path is a folder: give a file name",
    errno.EEXIST: "a file stands where a folder is needed: choose another path",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2, as all user errors."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see: {self.prog} --help)\n")


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 reports."""
    return int(os.environ.get("RANK", "0"))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _featnet_widths(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three widths C1,C2,C3, got {text!r}")
    c1, c2, c3 = (_positive_int(part) for part in parts)
    return c1, c2, c3


def _count(limit: int) -> typing.Callable[[str], int]:
    """A whole number from 1 to `limit` (an entry of the limits table)."""

    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(
                f"must be at most {limit} (see the limits in docs/errors.md), got {value}"
            )
        return value

    return parse


def _add_overwrite(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what} (once the new one is complete)",
    )


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="the networks' precision when sampling (default: the "
        "checkpoint's sample.precision; fashiongen.precision)",
    )


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {value}")
    return value


def _add_data_args(
    parser: argparse.ArgumentParser,
    *,
    default: str | None = None,
    what: str = "fashion-mnist (default)",
    data_dir: bool = True,
) -> None:
    """`--data NAME` (`--dataset`, its older spelling, too) and `--data-dir DIR`."""
    parser.add_argument(
        "--data",
        "--dataset",
        dest="data",
        metavar="NAME",
        default=default,
        help=f"{what}, mnist, synthetic or folder:PATH",
    )
    if data_dir:
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset's files")


def _add_model_source(parser: argparse.ArgumentParser, *, what: str = "") -> None:
    """The one way a command is told which model to read: a positional checkpoint, run
    folder or zoo name, or `--model NAME` (`_model_source`)."""
    parser.add_argument(
        "source",
        metavar="MODEL",
        nargs="?",
        help=f"a zoo model's name, a run folder or a checkpoint{what}",
    )
    parser.add_argument(
        "--model", metavar="NAME", help="a zoo model's name (see: fashiongen zoo), instead of MODEL"
    )


def _add_global_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Flags every command takes, before or after its name: the top parser sets the
    defaults, a command's parser only what it was given (SUPPRESS)."""
    default = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks on errors"
    )


class _CommandParsers:
    """`add_subparsers().add_parser` that gives each command the global flags."""

    def __init__(self, commands: argparse._SubParsersAction) -> None:
        self.commands = commands

    def add_parser(self, name: str, **kwargs: typing.Any) -> argparse.ArgumentParser:
        parser = self.commands.add_parser(name, **kwargs)
        _add_global_flags(parser)
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fashiongen", description="Train, sample and compare generative models of images."
    )
    parser.add_argument("--version", action="version", version=f"fashiongen {__version__}")
    _add_global_flags(parser, top=True)
    commands = _CommandParsers(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    )
    for add_command in COMMAND_PARSERS:
        add_command(commands)
    return parser


def _add_train_command(commands: _CommandParsers) -> None:
    train = commands.add_parser("train", help="train a model")
    train.add_argument("--model", metavar="NAME", help="model family (default: dcgan)")
    train.add_argument(
        "--config",
        metavar="FILE_OR_PRESET",
        help="TOML file or preset name (default: the family's preset)",
    )
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--max-steps", type=_positive_int)
    train.add_argument(
        "--budget-minutes",
        type=float,
        metavar="M",
        help="stop after M minutes of training; with --model all, M per family",
    )
    train.add_argument("--seed", type=_seed)
    train.add_argument("--out", metavar="DIR", help="run folder (default: runs/MODEL-TIME)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.lr=1e-3",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    _add_overwrite(train)
    train.add_argument("--dry-run", action="store_true", help="print the resolved config")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_data_args(train)


def _add_distill_command(commands: _CommandParsers) -> None:
    distill = commands.add_parser(
        "distill", help="a student of a DDPM that samples in a few network calls"
    )
    distill.add_argument(
        "teacher",
        metavar="TEACHER",
        nargs="?",
        help="a zoo name, run folder or checkpoint (with --resume: the run's own)",
    )
    distill.add_argument(
        "--steps", type=_positive_int, help="the student's network calls (default 4)"
    )
    distill.add_argument("--out", required=True, metavar="DIR", help="the student's run folder")
    distill.add_argument("--max-steps", type=_positive_int)
    distill.add_argument("--budget-minutes", type=float, metavar="M")
    distill.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.lr=1e-4",
    )
    distill.add_argument("--resume", action="store_true", help="continue the run in --out")
    _add_overwrite(distill)
    distill.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_sample_command(commands: _CommandParsers) -> None:
    sample = commands.add_parser("sample", help="draw images from a trained model")
    _add_model_source(sample)
    sample.add_argument("--num-samples", type=_count(limits.MAX_NUM_SAMPLES), default=64)
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="NAME",
        help="class name or id (repeatable; conditional models)",
    )
    sample.add_argument(
        "--per-class", action="store_true", help="one grid row per class (conditional models)"
    )
    sample.add_argument(
        "--out",
        default="samples.png",
        help="grid .png, .npz of uint8 images+labels, or a folder/ of PNGs",
    )
    _add_overwrite(sample)
    _add_sampling_args(sample)
    sample.add_argument("--no-ema", action="store_true", help="use the raw, not EMA, weights")
    _add_precision(sample)
    sample.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: the sampling networks run in onnxruntime on the CPU "
        "(needs the onnx extra; 1.1-2x faster on one thread, not "
        "faster on two: benchmarks/README.md)",
    )


def _add_edit_command(commands: _CommandParsers) -> None:
    edit = commands.add_parser("edit", help="refine, inpaint or vary garments from pictures")
    edit.add_argument("inputs", metavar="INPUT", nargs="+", help="pictures of any size and mode")
    edit.add_argument(
        "--model",
        required=True,
        metavar="NAME|CHECKPOINT",
        help="a zoo name, run folder or checkpoint of a ddpm or hybrid",
    )
    edit.add_argument(
        "--strength",
        type=float,
        default=None,
        help="in (0, 1]: how far each input is noised (default 0.8)",
    )
    edit.add_argument("--class", dest="class_name", metavar="NAME", help="refine towards it")
    edit.add_argument(
        "--transfer",
        action="store_true",
        help="class transfer: let the silhouette change towards --class",
    )
    edit.add_argument("--fill", action="store_true", help="fill the closed outlines of a sketch")
    edit.add_argument("--mask", metavar="MASK.png", help="inpaint where the mask is white")
    edit.add_argument("--variations", type=_positive_int, default=1, metavar="N")
    edit.add_argument("--seed", type=_seed, default=0)
    edit.add_argument("--out", required=True, help="x.png (grid), x.npz, or dir/ (PNGs)")
    _add_overwrite(edit)


def _add_data_command(commands: _CommandParsers) -> None:
    data = commands.add_parser("data", help="dataset tools")
    data_commands = _CommandParsers(
        data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    )
    info = data_commands.add_parser("info", help="where a dataset comes from and what it holds")
    info.add_argument("name", nargs="?", default="fashion-mnist")
    info.add_argument("--data-dir", metavar="DIR")
    info.add_argument("--split", choices=["train", "test"], default="train")
    info.add_argument("--json", action="store_true", help="print JSON")


def _add_featnet_command(commands: _CommandParsers) -> None:
    featnet = commands.add_parser("featnet", help="the metrics' feature network")
    featnet_commands = _CommandParsers(
        featnet.add_subparsers(dest="featnet_command", required=True, metavar="COMMAND")
    )
    featnet_train = featnet_commands.add_parser("train", help="train one for a dataset")
    _add_data_args(featnet_train, default="fashion-mnist", data_dir=False)
    featnet_train.add_argument("--epochs", type=_positive_int, default=12)
    featnet_train.add_argument("--seed", type=_seed, default=0)
    featnet_train.add_argument("--threads", type=_positive_int, default=1)
    featnet_train.add_argument(
        "--widths",
        type=_featnet_widths,
        default=(32, 64, 128),
        metavar="C1,C2,C3",
        help="conv widths at 28, 14 and 7 pixels",
    )
    featnet_train.add_argument(
        "--feature-dim", type=_positive_int, default=128, help="width of the semantic feature layer"
    )
    featnet_train.add_argument(
        "--out", metavar="FILE", help="output .safetensors (default: the user cache)"
    )
    _add_overwrite(featnet_train)


def _add_combine_command(commands: _CommandParsers) -> None:
    combine = commands.add_parser(
        "combine", help="a hybrid from an existing GAN checkpoint and an existing DDPM one"
    )
    combine.add_argument("gan", metavar="GAN_MODEL", help="a zoo name, run folder or checkpoint")
    combine.add_argument("ddpm", metavar="DDPM_MODEL", help="a zoo name, run folder or checkpoint")
    combine.add_argument(
        "--max-strength",
        type=float,
        default=0.5,
        help="the most a draft may be noised (fraction of the schedule)",
    )
    combine.add_argument(
        "--strength", type=float, help="the sampling default (default: max-strength, at most 0.25)"
    )
    combine.add_argument(
        "--steps", type=_positive_int, help="refining steps by default (default: the DDPM's own)"
    )
    combine.add_argument(
        "--guide-scale",
        type=float,
        help="autoguidance of the refining steps, with the DDPM's guide (default: the DDPM's)",
    )
    combine.add_argument(
        "--guidance-scale",
        type=float,
        help="classifier-free guidance of the refining steps (default: the DDPM's)",
    )
    combine.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder to write")
    _add_overwrite(combine)


def _add_export_command(commands: _CommandParsers) -> None:
    export = commands.add_parser(
        "export", help="the networks sampling runs, as ONNX files (batch size dynamic)"
    )
    _add_model_source(export)
    export.add_argument("--out", required=True, type=Path, metavar="DIR")
    _add_overwrite(export)


def _add_zoo_command(commands: _CommandParsers) -> None:
    commands.add_parser("zoo", help="list the shipped pretrained models")


def _add_visualize_command(commands: _CommandParsers) -> None:
    visualize = commands.add_parser(
        "visualize", help="interpolations (and VAE reconstructions, traversals) of a model"
    )
    _add_model_source(visualize)
    visualize.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="a new folder (default: the run folder's own pictures; needed for a zoo model)",
    )
    _add_overwrite(visualize)


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """The sampling settings `sample` and `eval` take over the checkpoint's own."""
    parser.add_argument("--sampler", help="diffusion sampler: ancestral, ddim, dpmpp_2m")
    parser.add_argument("--steps", type=_positive_int, help="diffusion sampling steps")
    parser.add_argument("--eta", type=float)
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance")
    parser.add_argument(
        "--guide",
        metavar="NAME|PATH",
        help="autoguidance (DDPM): a weaker model of the same task, e.g. the run's early "
        "checkpoint, that sampling steers away from",
    )
    parser.add_argument(
        "--guide-scale",
        type=float,
        help=f"autoguidance weight (1 = off; {DEFAULT_GUIDE_SCALE:g} with --guide)",
    )
    parser.add_argument("--strength", type=float, help="hybrid: how far the draft is noised")


_SAMPLING_FLAGS = {  # SampleConfig field -> argparse attribute; --guide is attached apart
    "sampler": "sampler",
    "num_steps": "steps",
    "eta": "eta",
    "guidance_scale": "guidance_scale",
    "guide_scale": "guide_scale",
    "strength": "strength",
    "precision": "precision",
}


def _sampling_changes(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The SampleConfig fields set on the command line (`_add_sampling_args`)."""
    return {
        field: getattr(args, flag)
        for field, flag in _SAMPLING_FLAGS.items()
        if getattr(args, flag, None) is not None
    }


def _add_eval_command(commands: _CommandParsers) -> None:
    eval_cmd = commands.add_parser("eval", help="score a checkpoint or sample set (FID, KID ...)")
    _add_model_source(eval_cmd, what=", or samples: an .npz or a folder of PNGs")
    eval_cmd.add_argument(
        "--num-samples",
        type=_count(limits.MAX_EVAL_SAMPLES),
        help="samples to draw (default 2000) or to read (default all)",
    )
    eval_cmd.add_argument(
        "--ref", choices=["test", "train"], default="test", help="the real split to compare with"
    )
    _add_data_args(
        eval_cmd,
        what="the real dataset: the model's (default; fashion-mnist for sample files)",
        data_dir=False,
    )
    eval_cmd.add_argument("--seed", type=_seed, default=0)
    _add_sampling_args(eval_cmd)
    _add_precision(eval_cmd)
    eval_cmd.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    _add_overwrite(eval_cmd, "--json file")


def _add_compare_command(commands: _CommandParsers) -> None:
    compare_cmd = commands.add_parser("compare", help="a comparison report of several runs")
    compare_cmd.add_argument(
        "runs", nargs="+", metavar="MODEL", help="zoo model names, run folders or checkpoints"
    )
    compare_cmd.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="report folder: report.md, report.html, report.json",
    )
    compare_cmd.add_argument("--num-samples", type=_count(limits.MAX_EVAL_SAMPLES), default=2000)
    _add_data_args(compare_cmd, what="the real dataset: each model's own (default)", data_dir=False)
    compare_cmd.add_argument("--seed", type=_seed, default=0)
    _add_overwrite(compare_cmd)


def _add_synth_command(commands: _CommandParsers) -> None:
    synth_cmd = commands.add_parser("synth", help="a labelled synthetic dataset from a model")
    _add_model_source(synth_cmd)
    synth_cmd.add_argument(
        "--num-samples",
        type=_count(limits.MAX_NUM_SAMPLES),
        required=True,
        help="training images (a test split of N/6 more is added)",
    )
    synth_cmd.add_argument("--out", required=True, metavar="DIR")
    synth_cmd.add_argument("--format", choices=["idx", "npz", "png"], default="idx")
    synth_cmd.add_argument("--seed", type=_seed, default=0)
    synth_cmd.add_argument(
        "--no-fast",
        action="store_true",
        help="sample a zoo model itself, not its distilled few-step version",
    )
    _add_precision(synth_cmd)
    _add_overwrite(synth_cmd)


def _add_cas_command(commands: _CommandParsers) -> None:
    cas_cmd = commands.add_parser("cas", help="classification accuracy score of a synthetic set")
    cas_cmd.add_argument("synth_dir", metavar="DIR", help="a folder written by fashiongen synth")
    cas_cmd.add_argument("--epochs", type=_positive_int, default=5)
    cas_cmd.add_argument("--seed", type=_seed, default=0)
    _add_data_args(cas_cmd, what="the real dataset: the model's (default)")
    cas_cmd.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    _add_overwrite(cas_cmd, "--json file")


def _add_serve_command(commands: _CommandParsers) -> None:
    serve = commands.add_parser("serve", help="a local web page to sample models (web extra)")
    serve.add_argument(
        "checkpoints",
        nargs="*",
        metavar="MODEL",
        help="run folders or checkpoints to offer, besides the model zoo",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument("--port", type=int, default=7860, help="1 to 65535 (default: 7860)")
    _add_precision(serve)


# Each command's parser, in the order `fashiongen --help` lists them.
COMMAND_PARSERS = (
    _add_train_command,
    _add_distill_command,
    _add_sample_command,
    _add_edit_command,
    _add_data_command,
    _add_featnet_command,
    _add_combine_command,
    _add_export_command,
    _add_zoo_command,
    _add_visualize_command,
    _add_eval_command,
    _add_compare_command,
    _add_synth_command,
    _add_cas_command,
    _add_serve_command,
)


# The flags `train` turns into config overrides: (flag, config key).
TRAIN_FLAGS = (
    ("model", "model.name"),
    ("epochs", "train.epochs"),
    ("max_steps", "train.max_steps"),
    ("budget_minutes", "train.max_minutes"),
    ("seed", "seed"),
    ("out", "out_dir"),
    ("data", "data.name"),
    ("data_dir", "data.data_dir"),
)
# `train --model all`: the model, budget, seed and run folder are set per family.
TRAIN_ALL_FLAGS = tuple(
    (flag, key) for flag, key in TRAIN_FLAGS if flag in ("epochs", "max_steps", "data", "data_dir")
)


def _flag_overrides(args: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> list[Override]:
    """The flags given, as (config key, value) pairs: data, never quoted into `--set` text
    (only the user's own `--set` texts are parsed, by the config)."""
    return [
        (key, getattr(args, flag)) for flag, key in flags if getattr(args, flag) not in (None, "")
    ]


def cmd_train(args: argparse.Namespace) -> int:
    if args.model == "all":
        return cmd_train_all(args)
    overrides = _flag_overrides(args, TRAIN_FLAGS)
    config_file = args.config
    if config_file is None and not args.resume:
        family = args.model or "dcgan"
        config_file = family if (PRESETS_DIR / f"{family}.toml").exists() else None
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
    data = read_toml(preset_path(config_file)) if config_file else {}
    if args.resume:  # the changes go on top of the run's own config
        cfg = resume_request(Path(args.out), data, overrides + args.overrides, check=args.dry_run)
    else:
        cfg = resolve_run_name(config_from_dict(merge_overrides(data, overrides + args.overrides)))
    if args.dry_run:
        print(to_toml(cfg), end="")
        return 0
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if _rank() != 0:  # under torchrun, rank 0 reports for all
        return 0
    run = result.run_dir
    print(
        f"trained {result.family}: {result.steps} steps, {result.epochs:.2f} epochs, "
        f"{result.images_per_second:.0f} images/s; stopped at {result.stop_reason}"
    )
    print(f"  run folder:   {run}")
    print(f"  checkpoint:   {result.final_checkpoint}")
    print(f"  sample grids: {run / 'samples'}")
    print(f"  loss curves:  {run / 'loss_curves.png'}")
    print(f"  animation:    {run / 'progress.gif'}")
    return 0


DISTILL_FLAGS = (("max_steps", "train.max_steps"), ("budget_minutes", "train.max_minutes"))


def cmd_distill(args: argparse.Namespace) -> int:
    overrides = _flag_overrides(args, DISTILL_FLAGS) + args.overrides
    if args.resume:  # the run's own config, the changes on top
        cfg = resume_request(Path(args.out), {}, overrides, check=False)
        _check_same_student(args, cfg)
    elif args.teacher is None:
        raise ConfigError("distill needs TEACHER (a zoo name, run folder or checkpoint)")
    else:
        steps = args.steps or DEFAULT_STEPS
        cfg = distill_config(args.teacher, steps=steps, out_dir=args.out, overrides=overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if _rank() == 0:
        print(
            f"distilled {args.teacher} to {cfg.model.steps} network calls: {result.steps} "
            f"steps, {result.images_per_second:.0f} images/s; stopped at {result.stop_reason}"
        )
        print(f"  checkpoint:   {result.final_checkpoint}")
        print(f"  sample:       fashiongen sample {result.run_dir}")
    return 0


def _check_same_student(args: argparse.Namespace, cfg: RunConfig) -> None:
    """`distill --resume` continues the run in --out: a TEACHER or --steps given beside it
    must be the run's own."""
    teacher = cfg.model.teacher
    if args.teacher is not None and teacher_source(args.teacher) != teacher:
        raise ConfigError(f"{args.out} distils {teacher}, not {args.teacher}: drop TEACHER")
    if args.steps is not None and args.steps != cfg.model.steps:
        raise ConfigError(
            f"{args.out} distils to {cfg.model.steps} network calls, not --steps {args.steps}"
        )


def _model_source(args: argparse.Namespace) -> Path:
    """The model a command reads: MODEL (a zoo name, run folder or checkpoint) or
    `--model NAME` of the zoo, exactly one of them."""
    if (args.source is None) == (args.model is None):
        raise ConfigError(
            f"{args.command} takes one model: a zoo name, run folder or "
            "checkpoint, or --model NAME (see: fashiongen zoo)"
        )
    if args.model is not None:
        return zoo_path(args.model)
    return model_source(args.source)


def _is_users_run(source: Path) -> bool:
    """Whether `source` is the user's own run or checkpoint, not a file of the shipped zoo."""
    return not source.resolve().is_relative_to(ZOO_DIR.resolve())


def cmd_sample(args: argparse.Namespace) -> int:
    source = _model_source(args)
    model, checkpoint = load_model(
        source,
        use_ema=not args.no_ema,
        device="cpu" if args.backend == "onnx" else select_device("auto"),
    )
    if args.backend == "onnx":
        use_onnx(model)
    if args.guide and args.backend == "onnx":
        raise ConfigError("--guide runs in torch only: leave out --backend onnx")
    sampling = sampling_with(model, checkpoint.config.sample, _sampling_changes(args), args.guide)
    class_names = class_names_of(checkpoint)
    labels, num_rows = None, None
    if (args.classes or args.per_class) and not model.num_classes:
        raise ConfigError(
            f"{args.model or args.source} is unconditional: --class and "
            "--per-class need a model trained with model.num_classes > 0"
        )
    if args.classes or args.per_class:
        ids = parse_classes(args.classes, class_names) if args.classes else range(model.num_classes)
        labels = class_labels(ids, args.num_samples, one_row_per_class=args.per_class)
        num_rows = len(ids) if args.per_class else None
    num_samples = len(labels) if labels is not None else args.num_samples
    out = sample_to(
        args.out,
        model,
        num_samples,
        labels=labels,
        seed=args.seed,
        sampling=sampling,
        class_names=class_names,
        num_rows=num_rows,
        overwrite=args.overwrite,
        progress=True,
    )
    what = checkpoint.path if _is_users_run(source) else f"zoo model {args.model or args.source}"
    print(f"wrote {num_samples} samples from {what} to {out}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    info = dataset_info(load_dataset(args.name, args.split, data_dir=args.data_dir))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<14} {v}")
        else:
            print(f"{key:<16} {value}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    return edit_command(
        args.out,
        args.model,
        args.inputs,
        strength=args.strength,
        class_name=args.class_name,
        mask=args.mask,
        num_variations=args.variations,
        seed=args.seed,
        use_transfer=args.transfer,
        use_fill=args.fill,
        overwrite=args.overwrite,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    with sampling_override(args.precision):
        serve(args.checkpoints, host=args.host, port=args.port)
    return 0


def cmd_featnet(args: argparse.Namespace) -> int:
    out = Path(args.out or cache_root() / "featnets" / featnet_file_name(args.data))
    check_free(out, overwrite=args.overwrite)  # before the training, not after
    torch.set_num_threads(args.threads)
    command = (
        f"fashiongen featnet train --data {args.data} --epochs {args.epochs} "
        f"--seed {args.seed} --threads {args.threads} "
        f"--widths {','.join(map(str, args.widths))} --feature-dim {args.feature_dim}"
        + (f" --out {args.out}" if args.out else "")
    )
    train_featnet(
        args.data,
        epochs=args.epochs,
        seed=args.seed,
        out_path=out,
        widths=args.widths,
        feature_dim=args.feature_dim,
        command=command,
    )
    return 0


def cmd_combine(args: argparse.Namespace) -> int:
    check_free(args.out, overwrite=args.overwrite, folder=True)
    gan, gan_checkpoint = load_model(args.gan)
    ddpm, ddpm_checkpoint = load_model(args.ddpm)
    check_same_classes(gan_checkpoint, ddpm_checkpoint)
    hybrid = combine(gan, ddpm, max_strength=args.max_strength)
    strength = min(args.max_strength, 0.25) if args.strength is None else args.strength
    guidances = {"guide_scale": args.guide_scale, "guidance_scale": args.guidance_scale}
    sample = dataclasses.replace(  # the DDPM's guidance and autoguidance refine, unless told
        ddpm_checkpoint.config.sample,
        strength=strength,
        num_steps=args.steps or ddpm_checkpoint.config.sample.num_steps,
        **{field: value for field, value in guidances.items() if value is not None},
    )
    config = dataclasses.replace(gan_checkpoint.config, model=hybrid.config, sample=sample)
    check_can_sample(hybrid, sample, what="the hybrid")  # as `sample` will, before writing
    extra = json.loads(gan_checkpoint.metadata.get("extra", "{}"))
    folder = save_checkpoint(
        args.out,
        model=hybrid,
        config=config,
        step=0,
        extra=extra,
        overwrite=args.overwrite,
        guide=hybrid.own_guide_weights(),
    )
    print(f"wrote hybrid checkpoint {folder}: draft {args.gan}, refiner {args.ddpm}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    model, checkpoint = load_model(_model_source(args), device="cpu")
    names = class_names_of(checkpoint) if model.num_classes else []
    with staged_folder(args.out, overwrite=args.overwrite) as tmp:
        written = {
            name: path.name for name, path in export_onnx(model, tmp, class_names=names).items()
        }
        whole = export_generation_graph(model, tmp, class_names=names)
        if whole is not None:
            written["the whole generation"] = whole.name
    for name, file_name in written.items():
        print(f"wrote {name}: {args.out / file_name}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    shipped = available()
    if not shipped:
        print("no zoo models ship with this install")
    width = max(map(len, shipped), default=0)
    for name, entry in manifest().items():
        if name in shipped:
            classes = f"{entry['num_classes']} classes" if entry["num_classes"] else "unconditional"
            print(f"{name:<{width}}  {entry['family']:<7} {classes:<13} {entry.get('summary', '')}")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    source = _model_source(args)
    model, checkpoint = load_model(source)
    if args.out is None and not _is_users_run(source):
        raise ConfigError(
            f"{args.model or args.source} is a zoo model: give --out DIR for its pictures"
        )
    test = load_from_config(checkpoint.config.data, "test")

    def draw(folder: Path) -> list[Path]:
        return write_run_visuals(
            model, folder, test.images, test.labels, sampling=checkpoint.config.sample
        )

    if args.out is None:  # the run's own pictures, redrawn while no other process writes it
        out = source if source.is_dir() else source.parent
        with locked_if_run(out):
            written = draw(out)
    else:
        with staged_folder(args.out, overwrite=args.overwrite) as tmp:
            written = [args.out / path.name for path in draw(tmp)]
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_train_all(args: argparse.Namespace) -> int:
    """`train --model all`: every family's quick preset under one budget, then the report."""
    # deferred: budget training writes the report, whose figures import matplotlib (0.35 s)
    from fashiongen.training.budget import family_configs, train_all

    if args.budget_minutes is None:
        raise ConfigError("--model all needs --budget-minutes M (training minutes per family)")
    if args.config or args.resume or args.overwrite:
        raise ConfigError(
            "--model all takes each family's quick preset and resumes by itself: "
            "drop --config / --resume / --overwrite"
        )
    overrides = _flag_overrides(args, TRAIN_ALL_FLAGS) + args.overrides
    out = args.out or os.path.join("runs", f"all-{time.strftime('%Y%m%d-%H%M%S')}")
    seed = args.seed or 0
    if args.dry_run:
        for family, cfg in family_configs(
            args.budget_minutes, out, seed=seed, overrides=overrides
        ).items():
            print(f"# {family}\n{to_toml(cfg)}")
        return 0
    report = train_all(
        args.budget_minutes, out, seed=seed, overrides=overrides, progress=not args.no_progress
    )
    _print_report_paths(report)
    return 0


def _print_report_paths(report: Path) -> None:
    print(
        f"report: {report} (also {report.with_suffix('.md').name}, "
        f"{report.with_suffix('.json').name})"
    )


def cmd_eval(args: argparse.Namespace) -> int:
    _check_json_free(args)
    with sampling_override(args.precision):
        result = evaluate_source(
            _model_source(args),
            num_samples=args.num_samples,
            ref=args.ref,
            seed=args.seed,
            dataset=args.data,
            sampling_changes=_sampling_changes(args),
            guide=args.guide,
            progress=True,
        )
    print(format_evaluation(result))
    _write_json_result(args, result)
    return 0


def _check_json_free(args: argparse.Namespace) -> None:
    """Refuse a taken `--json` before the (long) work that fills it."""
    if args.json:
        check_free(args.json, overwrite=args.overwrite)


def _write_json_result(args: argparse.Namespace, result: dict) -> None:
    if args.json:
        print(f"wrote {write_json(args.json, result, overwrite=args.overwrite)}")


def cmd_compare(args: argparse.Namespace) -> int:
    from fashiongen.report import compare_runs  # deferred: its figures import matplotlib

    report = compare_runs(
        args.runs,
        args.out,
        num_samples=args.num_samples,
        seed=args.seed,
        dataset=args.data,
        overwrite=args.overwrite,
        progress=True,
    )
    _print_report_paths(report)
    return 0


def _synth_source(args: argparse.Namespace) -> Path:
    """The model `synth` samples: a zoo model's distilled version when one ships (a
    dataset of 60,000 images feels every step), unless `--no-fast`."""
    source = _model_source(args)
    # a zoo name: `--model NAME`, or MODEL that is no path (`model_source`'s rule)
    name = args.model or (None if Path(args.source).exists() else args.source)
    fast = None if args.no_fast or name is None else fast_version(name)
    if fast is None:
        return source
    print(f"sampling {fast}, the distilled {name} (--no-fast: {name} itself)")
    return zoo_path(fast)


def cmd_synth(args: argparse.Namespace) -> int:
    source = _synth_source(args)
    with sampling_override(args.precision):
        written = write_synthetic_dataset(
            source,
            args.out,
            num_samples=args.num_samples,
            fmt=args.format,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=True,
        )
    how = {
        "idx": f"--data {written['dataset']} --data-dir {args.out}",
        "npz": f"fashiongen eval {Path(args.out) / 'train.npz'}",
        "png": f"--data folder:{args.out}",
    }[args.format]
    print(
        f"wrote {written['num_train']} train + {written['num_test']} test images "
        f"({args.format}) to {args.out}; load with: {how}"
    )
    for note in written["notes"]:
        print(f"note: {note}")
    return 0


def cmd_cas(args: argparse.Namespace) -> int:
    _check_json_free(args)
    result = classification_accuracy_score(
        args.synth_dir,
        epochs=args.epochs,
        seed=args.seed,
        dataset=args.data,
        data_dir=args.data_dir,
    )
    print(format_cas(result))
    _write_json_result(args, result)
    return 0


COMMANDS = {
    "train": cmd_train,
    "distill": cmd_distill,
    "sample": cmd_sample,
    "data": cmd_data_info,
    "serve": cmd_serve,
    "zoo": cmd_zoo,
    "export": cmd_export,
    "combine": cmd_combine,
    "visualize": cmd_visualize,
    "featnet": cmd_featnet,
    "eval": cmd_eval,
    "compare": cmd_compare,
    "synth": cmd_synth,
    "cas": cmd_cas,
    "edit": cmd_edit,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingInterruptedError as e:
        if _rank() == 0:
            print(str(e), file=sys.stderr)
        return EXIT_INTERRUPTED
    except FashiongenError as e:
        if args.debug:
            raise
        where = f" (rank {_rank()})" if _rank() else ""  # under torchrun
        print(f"error{where}: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        if args.debug:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        hint = f"; {OS_ERROR_HINTS[e.errno]}" if e.errno in OS_ERROR_HINTS else ""
        print(f"error: {e.strerror or e}{where}{hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
