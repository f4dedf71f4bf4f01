"""docs/errors.md promises only what a test checks: every test it names exists, and every
row of its tables about outputs, run folders, limits and write-time checks names one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ERRORS_DOC = ROOT / "docs" / "errors.md"
CHECKED_SECTIONS = (
    "Outputs: nothing overwritten, nothing half-written",
    "One writer per run folder",
    "Limits",
    "Checked when written",
)
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_test_the_doc_names_exists():
    references = REFERENCE.findall(ERRORS_DOC.read_text())
    assert len(references) > 20
    for path, name in references:
        source = ROOT / path
        assert source.is_file(), path
        if name:
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), f"{path}::{name}"


def test_every_rule_row_names_its_test():
    sections = _sections(ERRORS_DOC.read_text())
    for title in CHECKED_SECTIONS:
        rows = [
            line
            for line in sections[title].splitlines()
            if line.startswith("| ")
            and not line.startswith(("| rule", "| input", "| bound"))
            and not line.startswith("| `MAX_")
        ]
        assert rows, title
        for row in rows:
            assert REFERENCE.search(row), f"{title}: a row without its test: {row[:80]}"
