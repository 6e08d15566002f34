"""``streamer --version`` prints ``streamer <version>``, the version of the installed distribution."""

from __future__ import annotations

import subprocess
import sys
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


def test_version_through_the_entry_point_reads_no_settings(tmp_path: Path) -> None:
    """Through the real entry point (``main``): exit 0, one line on stdout, even where streamer.toml is broken --
    the version is printed before any settings are read."""
    (tmp_path / "streamer.toml").write_text("[no such section]\n")
    done = subprocess.run(
        [sys.executable, "-c", "from streamer.cli import main; main()", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"streamer {version('streamer')}\n"
