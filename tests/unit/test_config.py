import ast
import tomllib
from pathlib import Path

import pytest

import fashiongen.config
from fashiongen.config import (
    SAMPLER_NAMES,
    RunConfig,
    SampleConfig,
    TrainConfig,
    config_from_dict,
    merge_overrides,
    parse_override,
    resolve_config,
    to_toml,
)
from fashiongen.errors import ConfigError
from fashiongen.models import DCGAN, MODELS
from fashiongen.samplers import SAMPLERS


def test_defaults_build():
    cfg = RunConfig()
    assert cfg.train.batch_size == TrainConfig.batch_size
    assert cfg.model.name == "dcgan"


def test_toml_round_trip():
    cfg = config_from_dict(
        {
            "model": {"name": "dcgan", "g_width": 16},
            "train": {"lr": 1e-3, "betas": [0.9, 0.99], "max_steps": 7},
        }
    )
    again = config_from_dict(tomllib.loads(to_toml(cfg)))
    assert again == cfg
    assert again.model.g_width == 16
    assert again.train.betas == (0.9, 0.99)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.lr=2e-4", ["train", "lr"], 2e-4),
        ("train.epochs=3", ["train", "epochs"], 3),
        ("train.use_amp=true", ["train", "use_amp"], True),
        ("data.name=mnist", ["data", "name"], "mnist"),
        ("train.betas=[0.9, 0.95]", ["train", "betas"], [0.9, 0.95]),
        ("seed=5", ["seed"], 5),
    ],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_are_coerced_and_applied():
    cfg = config_from_dict(
        merge_overrides(
            {}, ["train.lr=1", "train.max_steps=none", "train.max_steps=12", "model.g_width=8"]
        )
    )
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 12
    assert cfg.model.g_width == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.nope=1"], "unknown config key 'train.nope'"),
        (["nope=1"], "unknown config key 'nope'"),
        (["train.epochs=abc"], "train.epochs"),
        (["train.epochs=1.5"], "train.epochs"),
        (["train.lr=-1"], "train.lr must be > 0"),
        (["train.device=tpu"], "train.device"),
        (["train.lr_schedule=linear"], "train.lr_schedule"),
        (["train.warmup_steps=-1"], "train.warmup_steps must be >= 0"),
        (["train.min_lr_ratio=2"], "train.min_lr_ratio must lie in"),
        (["model.name=transformer"], "unknown model 'transformer'"),
        (["model.g_width=0"], "g_width"),
        (["train.betas=[0.5]"], "train.betas"),
        (["train.use_amp=maybe"], "train.use_amp"),
        (["noequals"], "expected key=value"),
        (["a.b.c=1"], "unknown config key"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        config_from_dict(merge_overrides({}, overrides))


def test_errors_are_one_line():
    with pytest.raises(ConfigError) as info:
        config_from_dict(merge_overrides({}, ["train.batch_size=0"]))
    assert "\n" not in str(info.value)


def test_resolve_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "dcgan"\ng_width = 8\n[train]\nepochs = 4\n')
    cfg = resolve_config(path, ["train.epochs=6"])
    assert cfg.model.g_width == 8
    assert cfg.train.epochs == 6


def test_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(path)
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(tmp_path / "missing.toml")


def test_sampler_names_are_those_of_the_samplers_package():
    assert tuple(SAMPLERS) == SAMPLER_NAMES
    with pytest.raises(
        ConfigError,
        match=r"unknown sampler 'heun'; choose one of: ancestral, "
        r"ddim, dpmpp_2m$",
    ):
        SampleConfig(sampler="heun")


def test_config_is_a_leaf_of_the_package():
    """config.py imports no family, sampler or torch: the registry is handed to it."""
    tree = ast.parse(Path(fashiongen.config.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    ours = {name for name in imported if name.split(".")[0] in ("fashiongen", "torch")}
    assert ours == {"fashiongen.errors", "fashiongen.limits"}


def test_a_family_added_to_the_registry_resolves(monkeypatch):
    class Renamed(DCGAN):
        pass

    monkeypatch.setitem(MODELS, "renamed", Renamed)
    cfg = config_from_dict({"model": {"name": "renamed", "g_width": 8}})
    assert type(cfg.model) is DCGAN.Config and cfg.model.name == "renamed"
