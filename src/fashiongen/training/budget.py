"""Every family under one training budget, then one comparison report (`train --model all`).

`family_configs` gives each family's quick preset, stopped by a budget of training minutes
rather than by its epochs; `train_all` trains each in `OUT/FAMILY` (a finished run is kept,
an interrupted one resumed) and writes `OUT/report` with `fashiongen.report.compare_runs`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fashiongen.checkpoint import list_checkpoints
from fashiongen.config import (
    PRESETS_DIR,
    Override,
    RunConfig,
    config_from_dict,
    merge_overrides,
    read_toml,
)
from fashiongen.errors import ConfigError
from fashiongen.evaluation import DEFAULT_NUM_SAMPLES, resolve_featnet
from fashiongen.models import MODELS
from fashiongen.report import JSON_FILE, compare_runs
from fashiongen.training.loop import train

QUICK_SUFFIX = "-quick"
BUDGET_EPOCHS = 100_000  # so that train.max_minutes, not the epochs, ends a budgeted run


def family_configs(
    budget_minutes: float,
    out_dir: str | Path,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    overrides: Sequence[Override] = (),
) -> dict[str, RunConfig]:
    """Each family's quick preset, stopped by `budget_minutes` of training, in `out_dir/FAMILY`.

    Epochs are set far beyond what the budget allows (`BUDGET_EPOCHS`), so the budget ends
    every run; `overrides` (`--set` text or (key, value) pairs) apply to every family after
    that.
    """
    if not budget_minutes or budget_minutes <= 0:
        raise ConfigError(f"the budget must be a positive number of minutes, got {budget_minutes}")
    configs = {}
    # every family with a quick preset: not the distilled student, which needs a teacher
    every = [f for f in sorted(MODELS) if (PRESETS_DIR / f"{f}{QUICK_SUFFIX}.toml").is_file()]
    for family in families or every:
        preset = PRESETS_DIR / f"{family}{QUICK_SUFFIX}.toml"
        if family not in MODELS or not preset.is_file():
            raise ConfigError(f"no quick preset for family {family!r} ({preset.name})")
        settings = [
            ("train.epochs", BUDGET_EPOCHS),
            ("train.max_minutes", budget_minutes),
            ("seed", seed),
            ("out_dir", str(Path(out_dir) / family)),
            *overrides,
        ]
        configs[family] = config_from_dict(merge_overrides(read_toml(preset), settings))
    return configs


def train_all(
    budget_minutes: float,
    out_dir: str | Path,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    overrides: Sequence[Override] = (),
    num_samples: int = DEFAULT_NUM_SAMPLES,
    featnet: Any = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Train every family for `budget_minutes` of training time each, then compare them.

    Runs go to `out_dir/FAMILY`, the report to `out_dir/report`. A family whose run folder
    already holds a finished run is not trained again; an interrupted one is resumed, so
    rerunning the same command completes an interrupted comparison.

    Returns:
        The path of `report.html`.
    """
    configs = family_configs(
        budget_minutes, out_dir, seed=seed, families=families, overrides=overrides
    )
    for cfg in configs.values():  # the report needs them: fail now, not after the training
        resolve_featnet(featnet, cfg.data.name)
    log(
        f"training {len(configs)} families for {budget_minutes:g} min each "
        f"(about {len(configs) * budget_minutes:g} min in all), seed {seed}"
    )
    runs = []
    for family, cfg in configs.items():
        run = Path(cfg.out_dir)
        if (run / "summary.json").is_file() and (run / "final").is_dir():
            log(f"{family}: already trained in {run}, kept")
        else:
            resume = (run / "final").is_dir() or bool(list_checkpoints(run))
            log(f"{family}: {'resuming' if resume else 'training'} in {run}")
            train(cfg, resume=resume, progress=progress)
        runs.append(run)
    report = Path(out_dir) / "report"
    return compare_runs(
        runs,
        report,
        num_samples=num_samples,
        seed=seed,
        featnet=featnet,
        overwrite=(report / JSON_FILE).is_file(),
        log=log,  # its own, redrawn
        progress=progress,
    )
