"""``streamer --version`` through the real entry point, in a child process: printed before any settings are read."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path


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
