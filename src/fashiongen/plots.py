"""Figures: loss curves, sample grids over training, the progress animation, quality vs cost.

Functions return matplotlib Figures (never `plt.show()`); `save_figure` writes them
atomically. The Agg backend is used, so nothing needs a display.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402
from PIL import Image  # noqa: E402

from fashiongen.files import atomic_path  # noqa: E402

NOT_LOSSES = {"step", "epoch", "time_s", "images_per_s"}


def read_metrics(path: str | Path) -> dict[str, list[float]]:
    """metrics.csv as columns of floats (empty cells become NaN)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {
        k: [float(r[k]) if r.get(k) not in (None, "") else float("nan") for r in rows]
        for k in rows[0]
    }


def loss_curves(metrics_csv: str | Path, title: str | None = None) -> Figure | None:
    """Losses against steps, `event_*` columns drawn as vertical lines; a second panel with
    the training-time evaluation (eval.csv beside metrics.csv) when there is one."""
    columns = read_metrics(metrics_csv)
    if not columns:
        return None
    steps = columns["step"]
    losses = [k for k in columns if k not in NOT_LOSSES and not k.startswith("event_")]
    eval_columns = read_metrics(Path(metrics_csv).with_name("eval.csv"))
    evals = [k for k in eval_columns if k.startswith("eval_") and k != "eval_class_entropy"]
    panels = 1 + bool(evals)
    fig = Figure(figsize=(7, 3.2 * panels), dpi=110)
    ax = fig.add_subplot(panels, 1, 1)
    for k in losses:
        ax.plot(steps, columns[k], label=k, linewidth=1.2)
    for k in (k for k in columns if k.startswith("event_")):
        marks = [s for s, v in zip(steps, columns[k], strict=True) if v > 0]
        for i, s in enumerate(marks):
            ax.axvline(
                s,
                color="tab:red",
                alpha=0.35,
                linewidth=0.8,
                label=f"{k.removeprefix('event_')} ({len(marks)})" if i == 0 else None,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or Path(metrics_csv).parent.name)
    if evals:
        ax2 = fig.add_subplot(panels, 1, 2)
        for k in evals:
            ax2.plot(eval_columns["step"], eval_columns[k], "o-", label=k.removeprefix("eval_"))
        ax2.set_xlabel("step")
        ax2.set_yscale("log")
        ax2.set_title("evaluation of the EMA model (feature-network metrics)", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def progress_animation(frames: list[Path], out: str | Path, ms_per_frame: int = 400) -> Path:
    """An animated GIF of the per-epoch grids; the last frame is held longer."""
    images = [Image.open(p).convert("P", palette=Image.ADAPTIVE) for p in frames]
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 4]
    out = Path(out)
    with atomic_path(out) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
        )
    return out


def quality_vs_cost(rows: Sequence[dict[str, Any]]) -> Figure:
    """FID against training seconds and against sampling seconds per 1000 images, one point
    per comparison-report row (`name`, `fid`, `train_seconds`, `seconds_per_1000_samples`)."""
    fig = Figure(figsize=(9.5, 3.8), dpi=110)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(
        axes,
        ("train_seconds", "seconds_per_1000_samples"),
        ("training time (s)", "sampling time per 1000 images (s)"),
        strict=True,
    ):
        points = [
            (r[key], r["fid"], r["name"]) for r in rows if r.get(key) and r.get("fid") is not None
        ]
        for x, y, name in points:
            ax.scatter([x], [y], s=36)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        xs = [x for x, _, _ in points]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    fids = [r["fid"] for r in rows if r.get("fid")]
    if fids and min(fids) > 0 and max(fids) / min(fids) > 10:
        axes[0].set_yscale("log")  # shared: the good end stays readable beside a weak model
        for ticks in (axes[0].yaxis.set_major_formatter, axes[0].yaxis.set_minor_formatter):
            ticks(FormatStrFormatter("%g"))
    axes[0].set_ylabel("FID (lower is better)")
    fig.suptitle("quality versus cost", fontsize=10)
    fig.tight_layout()
    return fig
