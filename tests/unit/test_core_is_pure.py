"""The core imports nothing that does I/O: stdlib, numpy, msgspec (a pure decoder) and itself only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "streamer" / "core"
ALLOWED_THIRD_PARTY = {"numpy", "msgspec"}
# Stdlib modules that touch the outside world or the clock and have no place in the core.
FORBIDDEN_STDLIB = {"asyncio", "socket", "logging", "os", "subprocess", "threading", "time", "random", "io", "shutil"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0] if node.module.split(".")[0] != "streamer" else node.module)
    return found


def _allowed(module: str) -> bool:
    if module in FORBIDDEN_STDLIB:
        return False
    return module in sys.stdlib_module_names or module in ALLOWED_THIRD_PARTY


def test_core_imports_only_pure_modules() -> None:
    offenders: dict[str, set[str]] = {}
    for path in sorted(CORE.glob("*.py")):
        bad = set()
        for module in _imports(path):
            if module.startswith("streamer"):
                if not module.startswith("streamer.core"):
                    bad.add(module)
            elif not _allowed(module):
                bad.add(module)
        if bad:
            offenders[path.name] = bad
    assert offenders == {}


def test_the_check_sees_every_core_module() -> None:
    names = {p.stem for p in CORE.glob("*.py")}
    assert {"envelope", "features", "cards", "errors", "types"} <= names
