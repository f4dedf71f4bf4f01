"""Distilled few-step students against their 20-step guided teacher: quality and speed.

    python benchmarks/fast_sampling.py --out docs/results/distillation             # both
    python benchmarks/fast_sampling.py --out docs/results/distillation --part speed
    python benchmarks/fast_sampling.py --out docs/results/distillation --part quality \
        --student ddpm-fast2=runs/distill-2

Quality: each model draws N class-balanced samples (seed 0), scored against the test split
in the project's metric (FID, precision, recall, coverage); the teacher with its own
sampling settings (the zoo DDPM: DPM-Solver++ 20 steps, guidance 1.5), each student in its
K calls. Speed: seconds for 1000 class-conditional images in fp32 on this machine's threads,
teacher and students interleaved (A B A B ...) for `--repeats` rounds; the median, the
spread (max - min) and the teacher/student ratio of medians. `make bench` runs the speed
part, `make bench-quality` the quality part; each writes its half of OUT/distillation.json
and the table in OUT/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from fashiongen.checkpoint import load_model, model_source
from fashiongen.evaluation import draw_and_score
from fashiongen.generate import generate
from fashiongen.zoo import available
from fashiongen.zoo.release import zoo_sampling

# (teacher, its students) among the zoo's models; `--student NAME=PATH` adds a student
PAIRS = {"ddpm": ["ddpm-fast", "ddpm-fast2"], "ddpm-uncond": ["ddpm-uncond-fast"]}
METRICS = ("fid", "precision", "recall", "coverage", "conditional_accuracy")
SPEED_IMAGES = 1000
SPEED_BATCH = 250


def models_to_run(extra: dict[str, str]) -> dict[str, tuple[str, str]]:
    """name -> (teacher name, source) for every teacher and student that is available."""
    zoo = available()
    rows: dict[str, tuple[str, str]] = {}
    for teacher, students in PAIRS.items():
        if teacher not in zoo:
            continue
        rows[teacher] = (teacher, teacher)
        rows.update({s: (teacher, s) for s in students if s in zoo})
    for name, path in extra.items():
        teacher = load_model(model_source(path))[1].config.model.teacher
        rows[name] = (Path(teacher).name if Path(teacher).exists() else teacher, path)
    return rows


def quality(rows: dict[str, tuple[str, str]], num_samples: int) -> dict[str, dict]:
    out = {}
    for name, (teacher, source) in rows.items():
        model, checkpoint = load_model(model_source(source))
        sampling = zoo_sampling(checkpoint.config)
        scores, _ = draw_and_score(
            model, num_samples, sampling=sampling, seed=0, use_memorisation=False
        )
        out[name] = {
            "teacher": teacher,
            "nfe": model.num_network_evaluations(sampling),
            "batch_per_call": 2 if sampling.guidance_scale != 1 and model.num_classes else 1,
            **{k: scores.get(k) for k in METRICS},
        }
        print(name, out[name], flush=True)
    return out


def speed(rows: dict[str, tuple[str, str]], repeats: int) -> dict[str, dict]:
    loaded = {}
    for name, (_, source) in rows.items():
        model, checkpoint = load_model(model_source(source))
        loaded[name] = (model, zoo_sampling(checkpoint.config))
    times: dict[str, list[float]] = {name: [] for name in loaded}
    for model, sampling in loaded.values():  # warm-up
        generate(model, 16, sampling=sampling, seed=1)
    for _ in range(repeats):  # interleaved: A B C A B C ...
        for name, (model, sampling) in loaded.items():
            started = time.perf_counter()
            generate(model, SPEED_IMAGES, sampling=sampling, seed=1, batch_size=SPEED_BATCH)
            times[name].append(time.perf_counter() - started)
    out = {}
    for name, seconds in times.items():
        teacher = rows[name][0]
        out[name] = {
            "seconds_per_1000": statistics.median(seconds),
            "spread": max(seconds) - min(seconds),
            "runs": seconds,
            "speedup_vs_teacher": statistics.median(times[teacher]) / statistics.median(seconds),
        }
        print(name, out[name], flush=True)
    return out


def report(result: dict, out: Path) -> None:
    quality_rows, speed_rows = result.get("quality", {}), result.get("speed", {})
    names = list(dict.fromkeys([*quality_rows, *speed_rows]))
    lines = [
        "| model | teacher | network calls (batch x) | FID | vs teacher | precision | recall "
        "| recall vs teacher | coverage | class acc. | s / 1000 images | speed-up |",
        "|" + "---|" * 12,
    ]
    for name in names:
        q, s = quality_rows.get(name, {}), speed_rows.get(name, {})
        t = quality_rows.get(q.get("teacher", ""), {})

        def f(x, fmt=".3f"):
            return "" if x is None else format(x, fmt)

        lines.append(
            f"| {name} | {q.get('teacher', '')} | {q.get('nfe', '')} "
            f"(x{q.get('batch_per_call', '')}) | {f(q.get('fid'))} | "
            f"{f(q['fid'] / t['fid'], '.2f') + 'x' if q and t else ''} | "
            f"{f(q.get('precision'))} | {f(q.get('recall'))} | "
            f"{f(q['recall'] / t['recall'], '.2f') + 'x' if q and t else ''} | "
            f"{f(q.get('coverage'))} | {f(q.get('conditional_accuracy'))} | "
            f"{f(s.get('seconds_per_1000'), '.2f')} "
            f"{'(spread ' + f(s.get('spread'), '.2f') + ')' if s else ''} | "
            f"{f(s.get('speedup_vs_teacher'), '.1f') + 'x' if s else ''} |"
        )
    text = [
        "# Distilled students against their teacher",
        "",
        f"Quality: N = {result.get('num_samples')} class-balanced samples, seed 0, test split, "
        "the project's metric (v2). Speed: 1000 class-conditional images in batches of "
        f"{SPEED_BATCH}, fp32, {result.get('threads')} thread(s), models interleaved for "
        f"{result.get('repeats')} rounds: median seconds (spread = max - min).",
        "",
        "Commands: `python benchmarks/fast_sampling.py --out docs/results/distillation "
        "--part quality` (`make bench-quality`) and `--part speed` (`make bench`, quiet "
        "machine).",
        "",
        *lines,
        "",
    ]
    (out / "README.md").write_text("\n".join(text) + result.get("notes", ""))
    print("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/distillation"))
    parser.add_argument("--part", choices=["quality", "speed", "both"], default="both")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument(
        "--student", action="append", default=[], metavar="NAME=PATH", help="another student"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = models_to_run(dict(s.split("=", 1) for s in args.student))
    path = args.out / "distillation.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if args.part in ("quality", "both"):
        result["quality"] = quality(rows, args.num_samples)
        result["num_samples"] = args.num_samples
    if args.part in ("speed", "both"):
        result["speed"] = speed(rows, args.repeats)
        result.update(threads=torch.get_num_threads(), repeats=args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
