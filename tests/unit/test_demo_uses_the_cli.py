"""`make demo` shows only what a user can replay: every step is a `streamer` command (scripts/demo_shell.py runs
and prints them), never a call into the package. The demo's scripts may import the package's synthetic-data
generator (what `streamer produce` sends, and the drift act's changed rule) to write the files it sends; nothing
else of `streamer`."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

ALLOWED = {"streamer.synthetic"}  # data for the files the demo sends with `streamer produce --file`


def streamer_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "streamer")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "streamer":
            found.update(
                f"{node.module}.{alias.name}" if node.module == "streamer" else node.module for alias in node.names
            )
    return found


def test_the_demo_drives_only_the_command_line() -> None:
    scripts = sorted((REPO / "scripts").glob("demo*.py"))
    assert [p.name for p in scripts][:1] == ["demo.py"] and len(scripts) >= 4, scripts
    used = {path.name: streamer_imports(path) - ALLOWED for path in scripts}
    assert all(not names for names in used.values()), f"the demo calls the package, not the CLI: {used}"


def test_the_import_walk_sees_every_form(tmp_path: Path) -> None:
    script = tmp_path / "demo_x.py"
    script.write_text(
        "import json\nimport streamer.adapters.devstack\nfrom streamer import synthetic, wiring\n"
        "from streamer.adapters.kafka_admin import KafkaAdmin\n"
    )
    assert streamer_imports(script) == {
        "streamer.adapters.devstack",
        "streamer.synthetic",
        "streamer.wiring",
        "streamer.adapters.kafka_admin",
    }
