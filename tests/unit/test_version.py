"""``streamer --version`` prints ``streamer <version>``, the version of the installed distribution (in process;
through the real entry point in a child process: ``tests/integration/test_version_entry_point.py``)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner

from streamer.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_version_prints_the_installed_distribution_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"streamer {version('streamer')}\n"


def test_the_installed_version_is_the_one_pyproject_declares() -> None:
    """A stale install (pyproject bumped, venv not rebuilt) would print an old version: make rebuilds it."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version("streamer") == declared
