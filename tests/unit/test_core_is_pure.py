"""The core imports nothing that does I/O: stdlib, numpy, msgspec (a pure decoder) and itself only.

Every ``.py`` file under ``streamer/core/`` is checked, subpackages included, and relative imports are resolved
against the importing module's package (``from ..adapters import x`` in core is caught). The pure modules that
live beside their shell rather than in the core are held to the same rule, and may also import each other:
``streamer/top/view.py`` (the maths of ``streamer top``) and the Open Inference Protocol's codec -- every
module of ``streamer/oip/`` but the HTTP server (``http.py``, ``connections.py``) and the on-demand batcher
(``on_demand.py``), found by glob, so a codec split into several modules stays checked.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
CORE = PACKAGE_ROOT / "streamer" / "core"
OIP_SHELL = {"http.py", "on_demand.py", "connections.py"}  # the OIP modules that wait, listen or use threads
ALLOWED_THIRD_PARTY = {"numpy", "msgspec"}
# Stdlib modules that touch the outside world or the clock and have no place in the core.
FORBIDDEN_STDLIB = {
    "asyncio",
    "socket",
    "logging",
    "os",
    "subprocess",
    "threading",
    "time",
    "random",
    "io",
    "shutil",
    "urllib",
    "http",
    "pathlib",
    "tempfile",
    "select",
    "signal",
    "multiprocessing",
    "concurrent",
    "sqlite3",
    "ssl",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            if node.level and not node.module:  # from . import x: x may be a module
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def allowed(module: str, pure: frozenset[str] = frozenset()) -> bool:
    """Whether a pure module may import ``module``; ``pure``: the names of the pure modules outside the core."""
    top = module.split(".")[0]
    if top == "streamer":
        return module == "streamer.core" or module.startswith("streamer.core.") or module in pure
    if top in FORBIDDEN_STDLIB:
        return False
    return top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def pure_outside_core() -> list[Path]:
    streamer = PACKAGE_ROOT / "streamer"
    oip = [p for p in sorted((streamer / "oip").glob("*.py")) if p.name not in OIP_SHELL]
    return [streamer / "top" / "view.py", *oip]


def test_core_imports_only_pure_modules() -> None:
    offenders = {
        str(path.relative_to(CORE)): bad
        for path in core_files()
        if (bad := {m for m in imports(path) if not allowed(m)})
    }
    assert offenders == {}


def test_the_pure_modules_outside_the_core_import_only_pure_modules() -> None:
    files = pure_outside_core()
    pure = frozenset(module_name(path) for path in files) | {"streamer.oip", "streamer.top"}
    offenders = {
        str(path.relative_to(PACKAGE_ROOT)): bad
        for path in files
        if (bad := {m for m in imports(path) if not allowed(m, pure)})
    }
    assert offenders == {}


def test_the_check_sees_the_pure_modules_outside_the_core() -> None:
    names = {module_name(path) for path in pure_outside_core()}
    assert {"streamer.top.view", "streamer.oip.codec"} <= names
    assert not {"streamer.oip.http", "streamer.oip.on_demand"} & names


def test_a_pure_module_outside_the_core_may_not_import_the_shell() -> None:
    pure = frozenset({"streamer.oip.codec", "streamer.top.view"})
    assert allowed("streamer.core.requests", pure) and allowed("streamer.oip.codec", pure)
    for shell in ("streamer.oip.http", "streamer.oip.on_demand", "streamer.serving", "streamer.top.terminal"):
        assert not allowed(shell, pure), shell
    assert not allowed("logging", pure) and not allowed("urllib.request", pure)


def test_the_check_sees_every_core_module() -> None:
    names = {p.stem for p in core_files()}
    assert {
        "requests",
        "headers",
        "features",
        "cards",
        "errors",
        "types",
        "ledger",
        "batching",
        "scoring",
        "outputs",
    } <= names


@pytest.mark.parametrize(
    ("source", "relative_path", "bad"),
    [
        ("from ..adapters import kafka_admin\n", "core/x.py", "streamer.adapters"),
        ("from .. import pipeline\n", "core/x.py", "streamer.pipeline"),
        ("from ...adapters.redis_state import X\n", "core/sub/x.py", "streamer.adapters.redis_state"),
        ("import time\n", "core/sub/x.py", "time"),
        ("from os import path\n", "core/x.py", "os"),
        ("import confluent_kafka\n", "core/x.py", "confluent_kafka"),
    ],
)
def test_the_check_catches_relative_and_nested_imports(
    tmp_path: Path, source: str, relative_path: str, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "streamer"
    path = root / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", tmp_path)
    found = imports(path)
    assert bad in found and not allowed(bad)


def test_relative_imports_inside_core_are_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "streamer" / "core" / "sub" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from ..types import Records\nfrom . import helper\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", tmp_path)
    assert all(allowed(m) for m in imports(path)), imports(path)
