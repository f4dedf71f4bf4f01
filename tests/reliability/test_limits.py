"""Bounded work: one limits table (`fashiongen.limits`) for the CLI, the config and the web page.

A count beyond a bound, or images that would not fit in memory, are refused with one line
naming the bound before any sampling starts; a folder of PNGs streams to disk batch by batch.
docs/errors.md shows the table, and `test_the_documented_table_is_the_code_table` keeps the
two equal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from reliability_helpers import snapshot

import fashiongen.generate as generate
from fashiongen import limits, samples
from fashiongen.checkpoint import load_model
from fashiongen.config import SampleConfig, TrainConfig
from fashiongen.errors import ConfigError
from fashiongen.web import studio

ERRORS_DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
HUGE = "99999999999"


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if any model samples: refusals come before the work."""

    def refuse(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr("fashiongen.models.base.Family.sample", refuse)


@pytest.mark.parametrize(
    ("argv", "bound"),
    [
        (
            lambda a, out: ["sample", a.run, "--num-samples", HUGE, "--out", out / "s.npz"],
            limits.MAX_NUM_SAMPLES,
        ),
        (
            lambda a, out: ["synth", a.run, "--num-samples", HUGE, "--out", out / "d"],
            limits.MAX_NUM_SAMPLES,
        ),
        (lambda a, out: ["eval", a.run, "--num-samples", HUGE], limits.MAX_EVAL_SAMPLES),
        (
            lambda a, out: ["compare", a.run, "--num-samples", HUGE, "--out", out / "r"],
            limits.MAX_EVAL_SAMPLES,
        ),
    ],
    ids=["sample", "synth", "eval", "compare"],
)
def test_a_huge_count_is_one_line_naming_the_bound(
    argv, bound, artefacts, tmp_path, cli, no_sampling
):
    """`--num-samples 99999999999` used to end in "can't allocate 799999999992 bytes"."""
    line = cli(*argv(artefacts, tmp_path)).one_error_line()
    assert f"argument --num-samples: must be at most {bound}" in line and HUGE in line, line
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            lambda a, out: ["sample", a.run, "--num-samples", "5000000", "--out", out / "s.npz"],
            r"5000000 images of 1x28x28 need 3\.65 GiB of memory, more than the 2 GiB one command "
            r"may hold: ask for at most 2739137, or write a folder/ of PNGs",
        ),
        (
            lambda a, out: ["synth", a.run, "--num-samples", "5000000", "--out", out / "d"],
            r"5833333 images of 1x28x28 need .* GiB of memory, more than the 2 GiB .* at most "
            r"2739137 \(train and test split together\)",
        ),
        (
            lambda a, out: ["sample", a.run, "--num-samples", "20000", "--out", out / "g.png"],
            r"--num-samples is 20000, more than the images one grid PNG may hold \(10000\): write "
            r"an \.npz or a folder/ instead",
        ),
    ],
    ids=["sample npz", "synth", "sample grid"],
)
def test_what_cannot_fit_in_memory_is_refused_before_sampling(
    argv, message, artefacts, tmp_path, cli, no_sampling
):
    """10^8 samples used to grow memory without bound; what is held in memory is bounded."""
    line = cli(*argv(artefacts, tmp_path)).one_error_line()
    assert re.search(message, line), line
    assert snapshot(tmp_path) == {}


def test_a_png_folder_streams_batch_by_batch(artefacts, tmp_path, monkeypatch):
    """Each batch is written before the next is drawn, and no PNG is visible until all are."""
    model, checkpoint = load_model(artefacts.run)
    events = []
    real_sample = type(model).sample

    def sample(self, n, **kwargs):
        events.append(
            ("sample", n, sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")))
        )
        return real_sample(self, n, **kwargs)

    monkeypatch.setattr(type(model), "sample", sample)
    real_to_pil = samples.to_pil
    monkeypatch.setattr(samples, "to_pil", lambda *a: events.append(("png",)) or real_to_pil(*a))
    generate.sample_to(tmp_path / "pngs", model, 20, seed=0, batch_size=8)
    assert [e[:2] for e in events if e[0] == "sample"] == [
        ("sample", 8),
        ("sample", 8),
        ("sample", 4),
    ]
    kinds = [e[0] for e in events]
    assert kinds == ["sample"] + ["png"] * 8 + ["sample"] + ["png"] * 8 + ["sample"] + ["png"] * 4
    assert all(e[2] == [] for e in events if e[0] == "sample"), "nothing visible meanwhile"
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 20


def test_check_images_fit_names_the_bound():
    limits.check_images_fit(limits.MAX_IMAGE_BYTES // 784, (1, 28, 28))
    with pytest.raises(ConfigError, match=r"at most 174762"):
        limits.check_images_fit(10**6, (3, 64, 64))


def test_the_web_page_and_the_cli_share_the_table(artefacts):
    assert (studio.MAX_IMAGES, studio.MAX_STEPS, studio.MAX_FRAMES) == (
        limits.MAX_WEB_IMAGES,
        limits.MAX_SAMPLING_STEPS,
        limits.MAX_WEB_FRAMES,
    )
    page = studio.Studio({"m": artefacts.run})
    with pytest.raises(ConfigError, match=f"between 1 and {limits.MAX_WEB_IMAGES}"):
        page.generate_grid("m", "any", 0, limits.MAX_WEB_IMAGES + 1, "ddim", 2, 1.0, 0.5)
    with pytest.raises(ConfigError, match=f"between 1 and {limits.MAX_SAMPLING_STEPS}"):
        page.generate_grid("m", "any", 0, 1, "ddim", limits.MAX_SAMPLING_STEPS + 1, 1.0, 0.5)
    with pytest.raises(ConfigError, match=f"between 1 and {limits.MAX_SAMPLING_STEPS}"):
        SampleConfig(num_steps=limits.MAX_SAMPLING_STEPS + 1)
    with pytest.raises(ConfigError, match=rf"\[0, {limits.MAX_GUIDANCE_SCALE}\]"):
        page.generate_grid("m", "any", 0, 1, "ddim", 2, limits.MAX_GUIDANCE_SCALE + 1, 0.5)
    SampleConfig(guidance_scale=limits.MAX_GUIDANCE_SCALE)
    for field, bound in (
        ("batch_size", limits.MAX_BATCH_SIZE),
        ("eval_num_samples", limits.MAX_EVAL_SAMPLES),
        ("num_grid_samples", limits.MAX_TRAIN_GRID_SAMPLES),
    ):
        with pytest.raises(ConfigError, match=str(bound)):
            TrainConfig(**{field: bound + 1})
        TrainConfig(**{field: bound})


def test_the_documented_table_is_the_code_table():
    text = ERRORS_DOC.read_text()
    table = text[text.index("## Limits") :]
    rows = dict(re.findall(r"^\| `(MAX_\w+)` \| ([\d,]+|[\d.]+ GiB) \|", table, re.M))
    shown = {
        name: f"{value:,}" if name != "MAX_IMAGE_BYTES" else f"{value / 1024**3:g} GiB"
        for name, (value, _) in limits.LIMITS.items()
    }
    assert rows == shown
