"""What a run writes besides checkpoints and metrics: its config, the per-epoch sample grids
from fixed noise, training-time evaluation (`eval.csv`), and at the end `summary.json`, the
loss curves, the progress animation and the family's visuals (`fashiongen.visuals`). The
writer does nothing off rank 0, so the loop calls it the same way on every rank."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fashiongen import files
from fashiongen.config import RunConfig, SampleConfig, to_toml
from fashiongen.data import ImageDataset, load_from_config
from fashiongen.errors import ConfigError, FashiongenError
from fashiongen.evaluation import draw_and_score
from fashiongen.images import save_grid, to_uint8
from fashiongen.models.base import Family
from fashiongen.samples import class_labels
from fashiongen.training.ema import ema_keys, ema_weights
from fashiongen.training.log import ProgressBar
from fashiongen.visuals import write_run_visuals

EVAL_KEYS = (
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "coverage",
    "class_entropy",
    "per_class_recall",
    "per_class_coverage",
    "intra_class_spread",
)


def grid_labels(model: Family, num_samples: int) -> torch.Tensor | None:
    """Conditional grids have one row per class."""
    if not model.num_classes:
        return None
    return class_labels(range(model.num_classes), num_samples, one_row_per_class=True)


class RunOutputs:
    """Writes a run's grids, evaluations, summary and figures (rank 0; elsewhere a no-op).

    Samples come from the EMA weights (`ema`) when the run keeps them.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: RunConfig,
        model: Family,
        ema: dict[str, torch.Tensor],
        data: ImageDataset,
        *,
        enabled: bool,
    ) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.model = model
        self.ema = ema
        self.data = data
        self.enabled = enabled
        self.grid_seed = cfg.seed + 1
        self.grid_labels = grid_labels(model, cfg.train.num_grid_samples)

    @property
    def sampling(self) -> SampleConfig:
        """The run's sampling settings; without autoguidance until its guide is kept
        (`train.keep_guide_at`)."""
        sampling = self.cfg.sample
        if sampling.guide_scale != 1 and getattr(self.model, "guide", None) is None:
            return dataclasses.replace(sampling, guide_scale=1.0)
        return sampling

    def note(self, message: str) -> None:
        """A line on stderr, from rank 0."""
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def start(self) -> None:
        """The run folder, its samples/ and config.toml (the resolved config)."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        files.write_text_atomic(self.run_dir / "config.toml", to_toml(self.cfg))

    def write_grid(self, epoch: int) -> None:
        """samples/epoch_NNNN.png from the same noise every time."""
        if not self.enabled:
            return
        generator = torch.Generator().manual_seed(self.grid_seed)
        labels = self.grid_labels
        num = self.cfg.train.num_grid_samples if labels is None else len(labels)
        with ema_weights(self.model, self.ema):
            x0 = self.model.sample(num, labels=labels, generator=generator, sampling=self.sampling)
        save_grid(
            self.run_dir / "samples" / f"epoch_{epoch:04d}.png",
            to_uint8(x0),
            num_rows=self.model.num_classes or None,
        )

    def evaluate(self, step: int, epoch: int, bar: ProgressBar) -> None:
        """Score the EMA model and append a row to eval.csv (and a line beside the bar)."""
        if not self.enabled:
            return
        with ema_weights(self.model, self.ema):
            scores = self._scores()
        if scores is None:
            return
        row = {"step": step, "epoch": epoch, **scores}
        _append_csv(self.run_dir / "eval.csv", row)
        bar.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))

    def _scores(self) -> dict[str, float] | None:
        """FID and friends on `eval_num_samples` balanced samples, or None (with a warning)
        when the dataset has no feature network."""
        cfg, model = self.cfg, self.model
        try:
            result, _ = draw_and_score(
                model,
                cfg.train.eval_num_samples,
                sampling=self.sampling,
                seed=cfg.seed,
                dataset=self.data.name,
                use_memorisation=False,
            )
        except ConfigError as e:
            tqdm.write(f"warning: no training-time evaluation: {e}")
            return None
        finally:
            model.train()
        return {
            f"eval_{k}": math.nan if result.get(k) is None else float(result[k]) for k in EVAL_KEYS
        }

    def finish(self, summary: dict[str, Any]) -> None:
        """summary.json (`summary` plus the model's sizes), the figures and the visuals."""
        if not self.enabled:
            return
        sampling = set(ema_keys(self.model))
        sizes = {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "sampling_parameters": sum(
                v.numel() for k, v in self.model.state_dict().items() if k in sampling
            ),
        }
        summary = {
            "family": summary["family"],
            **sizes,
            **{k: v for k, v in summary.items() if k != "family"},
        }
        files.write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        _write_figures(self.run_dir)
        with ema_weights(self.model, self.ema):
            self._write_visuals()

    def _write_visuals(self) -> None:
        """Interpolations, and reconstructions/traversals for autoencoders."""
        try:
            held_out = load_from_config(self.cfg.data, "test")
        except FashiongenError:
            held_out = self.data
        write_run_visuals(
            self.model,
            self.run_dir,
            held_out.images,
            held_out.labels,
            seed=self.cfg.seed,
            sampling=self.sampling,
        )
        self.model.train()


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _write_figures(run_dir: Path) -> None:
    from fashiongen import plots  # deferred: matplotlib is slow to import

    curves = plots.loss_curves(run_dir / "metrics.csv")
    if curves is not None:
        plots.save_figure(curves, run_dir / "loss_curves.png")
    frames = sorted((run_dir / "samples").glob("epoch_*.png"))
    if frames:
        plots.progress_animation(frames, run_dir / "progress.gif")
