"""What a run reports while it trains: `metrics.csv` (and TensorBoard when installed), the
per-step values averaged over each logging window, and the progress bar. Off rank 0 both
are built and kept up to date but write nothing, so every rank runs the same code."""

from __future__ import annotations

import contextlib
import csv
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fashiongen import files
from fashiongen.config import RunConfig


class MetricsLog:
    """Averages per-step values over the logging window into metrics.csv (and TensorBoard).

    Keys starting with `event_` are counted, not averaged: they mark events such as a
    discriminator reversion on the loss curves.
    """

    def __init__(
        self, run_dir: Path, cfg: RunConfig, truncate_after: int | None, enabled: bool = True
    ) -> None:
        self.path = run_dir / "metrics.csv"
        self.truncate_after = truncate_after  # on resume: rows after this step are stale
        self.enabled = enabled  # False on ranks other than 0: rows are built, never written
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.seconds = 0.0
        self.fields: list[str] | None = None
        self.file = None
        self.tensorboard = None
        if cfg.train.use_tensorboard and enabled:
            with contextlib.suppress(ImportError):  # deferred: TensorBoard is optional
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def add(self, losses: dict[str, float], num_images: int, seconds: float) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.images += num_images
        self.seconds += seconds

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: forget the window, drop rows logged after `step`."""
        self.sums, self.count, self.images, self.seconds = {}, 0, 0, 0.0
        if self.file is not None:
            self.file.close()
            self.file = None
        self.truncate_after = step

    def flush(self, step: int, epoch: float, train_seconds: float) -> dict[str, float]:
        """The window's row (empty if no step was added), written on rank 0."""
        if not self.count:
            return {}
        row = {"step": step, "epoch": round(epoch, 4), "time_s": round(train_seconds, 3)}
        for k, v in self.sums.items():
            row[k] = v if k.startswith("event_") else v / self.count
        row["images_per_s"] = self.images / self.seconds if self.seconds else 0.0
        self.sums, self.count, self.images, self.seconds = {}, 0, 0, 0.0
        if self.enabled:
            self._write(row, step)
        return row

    def _write(self, row: dict[str, float], step: int) -> None:
        if self.file is None:
            self.fields = list(row)
            if self.truncate_after is not None and self.path.exists():
                self._truncate_after(self.truncate_after)
            self.truncate_after = None
            new = not self.path.exists() or self.path.stat().st_size == 0
            self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
            if new:
                self.writer.writeheader()
        self.writer.writerow(
            {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        )
        self.file.flush()
        if self.tensorboard is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.tensorboard.add_scalar(k, v, step)

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (the checkpoint resumed or rolled back to), and any
        row a killed process left half-written."""
        with open(self.path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            kept = [r for r in reader if (s := _row_step(r)) is not None and s <= step]
            fields = (
                reader.fieldnames
                if reader.fieldnames and "step" in reader.fieldnames
                else self.fields
            )
        if not kept:
            self.path.unlink()
            return
        with files.atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)


def _row_step(row: dict[str, str | None]) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


class ProgressBar:
    """The run's progress bar (on a terminal, rank 0) and its messages (rank 0 only).

    It counts steps, or under a time budget (`train.max_minutes`) budget seconds on the
    budget's clock, so that its total and ETA are true.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        step: int,
        total_steps: int,
        train_seconds: float,
        show: bool,
        enabled: bool,
    ) -> None:
        self.enabled = enabled
        budget = cfg.train.max_minutes
        self.budget_seconds = None if budget is None else 60 * budget
        by_time = self.budget_seconds is not None
        self.bar = tqdm(
            total=round(self.budget_seconds, 1) if by_time else total_steps,
            initial=round(train_seconds, 1) if by_time else step,
            # on a terminal only (tqdm's check): logs get the summary lines
            disable=None if show and enabled else True,
            dynamic_ncols=True,
            unit=f"s {cfg.train.clock}" if by_time else "step",
            desc=f"{cfg.model.name}",
        )

    def advance(self, train_seconds: float) -> None:
        """One step done, `train_seconds` of budget spent in all."""
        if self.budget_seconds is None:
            self.bar.update(1)
        else:
            self.bar.update(round(min(train_seconds, self.budget_seconds) - self.bar.n, 1))

    def show_row(self, step: int, row: dict[str, float]) -> None:
        """A logged row's values beside the bar."""
        shown = {k: f"{v:.3g}" for k, v in row.items() if k not in ("step", "epoch", "time_s")}
        self.bar.set_postfix(
            shown if self.budget_seconds is None else {"step": step, **shown}, refresh=False
        )

    def rewind(self, step: int) -> None:
        """After a rollback to `step` (a budget bar counts time, which goes on)."""
        if self.budget_seconds is None:
            self.bar.n = step

    def write(self, message: str, *, to_stderr: bool = False) -> None:
        if self.enabled:
            self.bar.write(message, file=sys.stderr if to_stderr else None)

    def close(self) -> None:
        self.bar.close()
