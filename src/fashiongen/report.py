"""The comparison report across runs (`fashiongen compare`).

`compare_runs` samples every run afresh, times its sampler and scores it at one N and seed
(`fashiongen.evaluation.draw_and_score`), then writes `report.md`, a self-contained
`report.html` (images as base64 data URIs) and `report.json`: one row per run with its
training costs (from its summary.json), sampling speed and metrics, its sample grid and loss
curves, and the quality-versus-cost figure (`fashiongen.plots.quality_vs_cost`).
docs/metrics.md says what each metric means and how they behave on real data.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fashiongen import plots
from fashiongen.checkpoint import model_source, read_metadata
from fashiongen.errors import ConfigError, DataError
from fashiongen.evaluation import (
    DEFAULT_NUM_SAMPLES,
    METRICS,
    checkpoint_info,
    draw_and_score,
    format_cell,
    is_checkpoint,
    load_for_sampling,
    resolve_featnet,
    write_json,
)
from fashiongen.files import safe_name, staged_folder, write_text_atomic
from fashiongen.images import save_grid
from fashiongen.zoo import shipped_entry

GRID_PER_CLASS = 8
GRID_UNCONDITIONAL = 64
MARKDOWN_FILE, HTML_FILE, JSON_FILE = "report.md", "report.html", "report.json"
PLOT_FILE = "quality_vs_cost.png"

# (key, header, format) of the comparison's cost columns; its metric columns are `METRICS`.
COST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "run", "{}"),
    ("family", "family", "{}"),
    ("parameters", "trained params", "{:,}"),
    ("sampling_parameters", "sampling params", "{:,}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("train_images_per_second", "train img/s", "{:.0f}"),
    ("epochs", "epochs", "{:.2f}"),
    ("sampler", "sampler", "{}"),
    ("sample_images_per_second", "sample img/s", "{:.0f}"),
)
COLUMNS = COST_COLUMNS + METRICS


# ---------------------------------------------------------------- the comparison report


def _run_folder(path: Path) -> Path:
    """The run folder of a run, checkpoint folder or weights file (where summary.json is)."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "summary.json").is_file():
            return candidate
    return path if path.is_dir() else path.parent


def _display_name(path: Path) -> str:
    """A run's folder name; a shipped zoo model's zoo name."""
    shipped = shipped_entry(path)
    if shipped is not None:
        return f"{shipped[0]} (zoo)"
    return path.name if path.name not in ("final", "") else path.parent.name


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [_display_name(p) for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}-{seen[name]}")
    return out


def _grid_images(
    images: torch.Tensor, labels: torch.Tensor | None, num_classes: int
) -> tuple[torch.Tensor, int | None]:
    """Up to 8 samples per class, one row per class; else the first 64 samples."""
    if labels is not None and num_classes and len(images) >= num_classes:
        per_class = min(GRID_PER_CLASS, len(images) // num_classes)
        chosen = torch.cat(
            [torch.nonzero(labels == k).flatten()[:per_class] for k in range(num_classes)]
        )
        return images[chosen], num_classes
    return images[:GRID_UNCONDITIONAL], None


def score_run(
    run: str | Path,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    dataset: str | None = None,
    featnet: Any = None,
    use_memorisation: bool = True,
    use_cache: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], torch.Tensor, int | None]:
    """One report row: costs from summary.json, sampling speed and metrics measured now.

    Returns:
        (row, grid images uint8 (n, C, H, W), grid rows or None).
    """
    run = Path(run)
    if not run.exists():
        raise DataError(f"no such run folder or checkpoint: {run}")
    folder = _run_folder(run)
    summary = _training_summary(run, folder)
    model, checkpoint = load_for_sampling(run)
    dataset = dataset or checkpoint.config.data.name
    featnet = resolve_featnet(featnet, dataset)
    result, drawn = draw_and_score(
        model,
        num_samples,
        sampling=checkpoint.config.sample,
        seed=seed,
        dataset=dataset,
        featnet=featnet,
        use_memorisation=use_memorisation,
        use_cache=use_cache,
        progress=progress,
    )
    info = checkpoint_info(model, checkpoint, drawn)
    ips = info["sample_images_per_second"]
    row = {
        "run_dir": str(folder),
        "family": info["family"],
        "parameters": summary.get("parameters") or sum(p.numel() for p in model.parameters()),
        "sampling_parameters": _sampling_parameters(model),
        "steps": summary.get("steps", info["step"]),
        "train_seconds": summary.get("train_seconds"),
        "train_images_per_second": summary.get("train_images_per_second"),
        "epochs": summary.get("epochs"),
        "train_device": summary.get("device"),
        "sampler": info["sampler"],
        "sampling": info["sampling"],
        "sample_images_per_second": ips,
        "seconds_per_1000_samples": 1000 / ips if ips else None,
        "sample_device": info["device"],
        **{key: result.get(key) for key, _, _ in METRICS},
        "kid_std": result["kid_std"],
        "class_entropy_max": result["class_entropy_max"],
        "evaluation": result,
    }
    if not summary:
        result["notes"].append(f"no summary.json in {folder}: training costs unknown")
    elif info["family"] == "distilled":
        result["notes"].append("a distilled model's training seconds leave out its teacher's")
    grid, grid_rows = _grid_images(drawn.images, drawn.labels, info["num_classes"])
    return row, grid, grid_rows


def _sampling_parameters(model: Any) -> int:
    """The parameters that draw an image: not a GAN's or a student's discriminator, nor a
    student's teacher, which training needs and sampling does not."""
    return sum(p.numel() for key, p in model.named_parameters() if model.needed_for_sampling(key))


def _training_summary(run: Path, folder: Path) -> dict[str, Any]:
    """What the run's summary.json says of its training; for a shipped zoo model, which has
    none, what its manifest says (training seconds, epochs, device)."""
    if (folder / "summary.json").is_file():
        try:
            return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder / 'summary.json'} is unreadable ({e})") from None
    shipped = shipped_entry(run)
    if shipped is None:
        return {}
    _, entry = shipped
    return {key: entry.get(key) for key in ("train_seconds", "epochs", "device")}


def machine_info() -> dict[str, Any]:
    """Where the sampling speeds were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def compare_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    dataset: str | None = None,
    featnet: Any = None,
    use_memorisation: bool = True,
    use_cache: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> Path:
    """Compare runs: one table row each, sample grids, loss curves, quality-versus-cost plots.

    Every run is sampled afresh (`num_samples` images, `seed`, its own sampler settings,
    balanced classes if conditional), timed, and scored by `evaluate` against the real test
    split. Writes `report.md` (images beside it), `report.html` (self-contained) and
    `report.json` into `out_dir`, which appears whole once the report is complete; an
    existing `out_dir` is refused before any scoring unless `overwrite`.

    Args:
        run_dirs: run folders (or checkpoints) to compare.
        out_dir: the report folder (created).
        num_samples: samples per run.
        seed: seeds sampling and KID.
        dataset: the real dataset; default each run's own.
        featnet: the feature network; default `load_featnet` of each run's dataset.
        use_memorisation: compute copy rates.
        use_cache: read and write cached reference statistics.
        overwrite: replace an existing `out_dir`.
        log: receives one line per run.
        progress: a bar of images drawn per run, on a terminal.

    Returns:
        The path of `report.html`.
    """
    if not run_dirs:
        raise ConfigError("compare needs at least one run folder")
    paths = [model_source(p) for p in run_dirs]  # zoo names too
    for path in paths:  # fail before the first, possibly long, scoring
        if not is_checkpoint(path):
            raise DataError(f"{path} holds no checkpoint")
    check_can_score(paths, dataset=dataset, featnet=featnet)
    with staged_folder(out_dir, overwrite=overwrite) as out:
        _write_report(
            out,
            paths,
            num_samples=num_samples,
            seed=seed,
            dataset=dataset,
            featnet=featnet,
            use_memorisation=use_memorisation,
            use_cache=use_cache,
            log=log,
            progress=progress,
        )
    return Path(out_dir) / HTML_FILE


def trained_on(path: str | Path) -> str:
    """The dataset a checkpoint's model was trained on, from its header alone."""
    return str(
        json.loads(read_metadata(path)["config"]).get("data", {}).get("name", "fashion-mnist")
    )


def check_can_score(paths: Sequence[Path], *, dataset: str | None, featnet: Any) -> None:
    """Refuse, before any sampling, models of different datasets compared without one
    `dataset` to score them against, and a dataset without a feature network."""
    datasets = {path: dataset or trained_on(path) for path in paths}
    if len(set(datasets.values())) > 1:
        listed = ", ".join(f"{path.name}: {name}" for path, name in datasets.items())
        raise ConfigError(
            f"the models were trained on different datasets ({listed}): "
            "compare models of one dataset, or pass --data NAME to score all "
            "against one"
        )
    for name in set(datasets.values()):
        resolve_featnet(featnet, name)


def _write_report(
    out: Path,
    paths: Sequence[Path],
    *,
    num_samples: int,
    seed: int,
    dataset: str | None,
    featnet: Any,
    use_memorisation: bool,
    use_cache: bool,
    log: Callable[[str], None],
    progress: bool,
) -> None:
    """Score `paths` and write the report's files into the folder `out`."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for path, name in zip(paths, _unique_names(paths), strict=True):
        log(f"scoring {name} ({path}) on {num_samples} samples ...")
        row, grid, grid_rows = score_run(
            path,
            num_samples=num_samples,
            seed=seed,
            dataset=dataset,
            featnet=featnet,
            use_memorisation=use_memorisation,
            use_cache=use_cache,
            progress=progress,
        )
        row["name"] = name
        grid_file = out / "images" / f"samples_{safe_name(name, fallback='run')}.png"
        save_grid(grid_file, grid, num_rows=grid_rows)
        row["grid"] = str(grid_file.relative_to(out))
        row["loss_curves"] = _loss_curves(Path(row["run_dir"]), out / "images", name)
        rows.append(row)
        log(
            f"  FID {format_cell(row['fid'], '{:.2f}')}, "
            f"{format_cell(row['sample_images_per_second'], '{:.0f}')} samples/s"
        )
    plots.save_figure(plots.quality_vs_cost(rows), out / "images" / PLOT_FILE)
    report = {
        "num_samples": num_samples,
        "seed": seed,
        "references": _references(rows),
        "machine": machine_info(),
        "columns": [key for key, _, _ in COLUMNS],
        "rows": rows,
        "quality_vs_cost": f"images/{PLOT_FILE}",
    }
    write_json(out / JSON_FILE, report)
    write_text_atomic(out / MARKDOWN_FILE, render_markdown(report))
    write_text_atomic(out / HTML_FILE, render_html(report, out))


def _loss_curves(run_dir: Path, images_dir: Path, name: str) -> str | None:
    """Copy (or draw) a run's loss curves into the report folder; its relative path."""
    target = images_dir / f"loss_{safe_name(name, fallback='run')}.png"
    if (run_dir / "loss_curves.png").is_file():
        shutil.copyfile(run_dir / "loss_curves.png", target)
    else:
        fig = plots.loss_curves(run_dir / "metrics.csv", title=name)
        if fig is None:
            return None
        plots.save_figure(fig, target)
    return f"{images_dir.name}/{target.name}"


def _references(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct (dataset, split, count, featnet) the rows were scored against."""
    seen = {}
    for row in rows:
        ev = row["evaluation"]
        key = (ev["dataset"], ev["ref"], ev["featnet"]["fingerprint"])
        seen.setdefault(
            key,
            {
                "dataset": ev["dataset"],
                "split": ev["ref"],
                "count": ev["ref_count"],
                "featnet": ev["featnet"],
                "kid_subset_size": ev["kid_subset_size"],
                "kid_num_subsets": ev["kid_num_subsets"],
            },
        )
    return list(seen.values())


def _preamble(report: dict[str, Any]) -> list[str]:
    """Sentences stating N, seed, references, feature nets and the machine."""
    lines = [
        f"Every run sampled afresh: N = {report['num_samples']} samples (balanced class "
        f"labels for conditional models), seed {report['seed']}, each run's own sampler "
        "settings."
    ]
    for ref in report["references"]:
        net = ref["featnet"]
        acc = "unknown" if net["test_accuracy"] is None else f"{net['test_accuracy']:.4f}"
        lines.append(
            f"Reference: {ref['dataset']} {ref['split']} split, {ref['count']} images; "
            f"feature net {net['name']} (test accuracy {acc}, fingerprint "
            f"{net['fingerprint']}); KID over {ref['kid_num_subsets']} subsets of "
            f"{ref['kid_subset_size']}."
        )
    m = report["machine"]
    lines.append(
        f"Sampling speed measured on {m['platform']}, {m['cpu_count']} CPUs, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}, {m['date']}. "
        "Training time and images/s come from each run's summary.json."
    )
    lines.append(
        "Metrics: FID (arXiv 1706.08500) and KID (arXiv 1801.01401), lower is better; "
        "precision/recall (arXiv 1904.06991) and density/coverage (arXiv 2002.09797), "
        "class recall and class coverage: the same within each class, averaged over "
        "classes; class spread: mean pairwise feature distance within a class over "
        "that of its real images (~1 for real data); "
        "class entropy in nats (max ln 10 = 2.303); copy rate: samples nearer a "
        "training image than 99% of real test images are. See docs/metrics.md."
    )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the table, then grids, loss curves and the plot as relative image links."""
    rows = report["rows"]
    header = [h for _, h, _ in COLUMNS]
    lines = [
        "# Model comparison",
        "",
        *[f"{s}  " for s in _preamble(report)],
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(k), f) for k, _, f in COLUMNS) + " |")
    notes = [f"- {r['name']}: {n}" for r in rows for n in r["evaluation"]["notes"]]
    if notes:
        lines += ["", "Notes:", "", *notes]
    names = [r["name"] for r in rows]
    lines += [
        "",
        "## Samples",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(rows),
        "| " + " | ".join(f"![{n}]({r['grid']})" for n, r in zip(names, rows, strict=True)) + " |",
        "",
        "## Loss curves",
        "",
    ]
    for row in rows:
        lines.append(
            f"![{row['name']}]({row['loss_curves']})"
            if row["loss_curves"]
            else f"{row['name']}: no metrics.csv"
        )
    lines += [
        "",
        "## Quality versus cost",
        "",
        f"![quality versus cost]({report['quality_vs_cost']})",
        "",
    ]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2), td:nth-child(7) { text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; } figcaption { text-align: center; font-weight: bold; }
img.pixel { image-rendering: pixelated; }
p.note { color: #555; font-size: 0.9em; }
"""


def render_html(report: dict[str, Any], folder: Path) -> str:
    """report.html: the same content with every image embedded; no external resources."""
    esc = html.escape
    rows = report["rows"]
    head = "".join(f"<th>{esc(h)}</th>" for _, h, _ in COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{esc(format_cell(r.get(k), f))}</td>" for k, _, f in COLUMNS)
        + "</tr>"
        for r in rows
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>fashiongen model comparison</title>",
        f"<style>{HTML_STYLE}</style>",
        "</head><body>",
        "<h1>Model comparison</h1>",
    ]
    parts += [f"<p>{esc(s)}</p>" for s in _preamble(report)]
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts += [
        f'<p class="note">{esc(r["name"])}: {esc(n)}</p>'
        for r in rows
        for n in r["evaluation"]["notes"]
    ]
    parts.append('<h2>Samples</h2><div class="grids">')
    parts += [
        f'<figure><figcaption>{esc(r["name"])}</figcaption><img class="pixel" '
        f'alt="samples of {esc(r["name"])}" src="{_data_uri(folder / r["grid"])}">'
        "</figure>"
        for r in rows
    ]
    parts.append('</div><h2>Loss curves</h2><div class="grids">')
    parts += [
        f'<figure><figcaption>{esc(r["name"])}</figcaption><img alt="loss curves of '
        f'{esc(r["name"])}" src="{_data_uri(folder / r["loss_curves"])}"></figure>'
        for r in rows
        if r["loss_curves"]
    ]
    parts.append("</div><h2>Quality versus cost</h2>")
    parts.append(
        f'<img alt="quality versus cost" src="{_data_uri(folder / report["quality_vs_cost"])}">'
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
