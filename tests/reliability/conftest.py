"""Fixtures of the reliability suite; the helpers live in reliability_helpers.py."""

from __future__ import annotations

import pytest
from reliability_helpers import CliResult, run_cli


@pytest.fixture
def cli(capsys):
    """`cli(*args)` runs `fashiongen ARGS` in-process and returns a CliResult."""
    def run(*args) -> CliResult:
        return run_cli(capsys, *args)

    return run
