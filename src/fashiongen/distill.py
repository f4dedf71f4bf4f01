"""`fashiongen distill`: the run config of a few-step student of a DDPM teacher.

The student is a family (`fashiongen.models.distilled`) trained by the one training loop,
so distillation resumes, checkpoints, logs and budgets like any training. This module only
builds its config: the teacher checkpoint's own config (data, seed) with the student as the
model, the `distill` preset's training settings, the user's overrides on top, and the
student's sampling settings (K deterministic steps, no guidance).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fashiongen.checkpoint import load_checkpoint, model_source
from fashiongen.config import (
    PRESETS_DIR,
    Override,
    RunConfig,
    config_from_dict,
    config_to_dict,
    merge_overrides,
    read_toml,
)
from fashiongen.errors import ConfigError
from fashiongen.models.ddpm import DDPMConfig
from fashiongen.models.distilled import student_config

DISTILL_PRESET = PRESETS_DIR / "distill.toml"
DEFAULT_STEPS = 4  # the student's network calls


def teacher_source(teacher: str) -> str:
    """How a run records its teacher: a path absolute, a zoo name as it is."""
    return str(Path(teacher).resolve()) if Path(teacher).exists() else teacher


def distill_config(
    teacher: str, *, steps: int, out_dir: str | Path, overrides: list[Override] | None = None
) -> RunConfig:
    """The run config that distils `teacher` (a zoo name, run folder or checkpoint of a
    ddpm or distilled model) into a `steps`-call student trained in `out_dir`."""
    checkpoint, _ = load_checkpoint(model_source(teacher))
    model = checkpoint.config.model
    if not isinstance(model, DDPMConfig) or model.t_max is not None:
        raise ConfigError(
            f"{teacher} is a {model.name} model: distillation needs a DDPM (or an already "
            "distilled one) trained from pure noise"
        )
    sampling = checkpoint.config.sample
    if sampling.num_steps % steps:
        raise ConfigError(
            f"--steps {steps} must divide the teacher's {sampling.num_steps} sampling steps, "
            "so each student step covers whole teacher steps"
        )
    student = student_config(model, sampling, steps=steps, source=teacher_source(teacher))
    table: dict[str, Any] = config_to_dict(checkpoint.config)
    table["model"] = config_to_dict(student)
    table["train"] = read_toml(DISTILL_PRESET)["train"]
    table["sample"] = config_to_dict(
        dataclasses.replace(
            sampling,
            sampler="ddim",
            num_steps=steps,
            eta=0.0,
            guidance_scale=1.0,
            guide="",
            guide_scale=1.0,
        )
    )  # K deterministic calls, both guidances folded in
    table["out_dir"] = str(out_dir)
    return config_from_dict(merge_overrides(table, overrides or []))
