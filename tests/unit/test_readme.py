"""The README's code blocks marked `<!-- runnable -->` run as written (in a fresh folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fashiongen.data.sources import resolve_idx_dir

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"<!-- runnable -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.skipif(
    resolve_idx_dir("fashion-mnist") is None,
    reason="Fashion-MNIST not available (the examples score against it)",
)
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})  # noqa: S102


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize(
    "page",
    [README, README.parent / "benchmarks" / "README.md"],
    ids=["README.md", "benchmarks/README.md"],
)
def test_relative_links_point_at_files(page):
    """Every relative link resolves (results live in one place, docs/results)."""
    targets = [t for t in LINK.findall(page.read_text()) if "://" not in t]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert targets and not missing, missing
