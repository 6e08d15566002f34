"""A worker never imports a pickle loader, nor the model import and the training libraries behind it.

``streamer models import --trust-pickle`` is the one place streamer may unpickle (a pickle runs code). Two
checks keep it away from the worker:

- statically, every streamer module a worker can reach from its composition roots (``streamer.app``,
  ``streamer.serve``, ``streamer.cli.worker``), following every import statement, those inside functions too,
  imports neither a pickle-family module nor ``streamer.model_import``;
- in a fresh interpreter that loads the ``streamer`` command and the worker as ``streamer worker`` does, none of
  the model-import packages is in ``sys.modules``, and no loaded streamer module imports a pickle loader.
  (The stdlib ``pickle`` module itself is always there: numpy imports it.)
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PICKLERS = {"pickle", "_pickle", "cPickle", "joblib", "dill", "cloudpickle", "skops"}
IMPORT_ONLY = {"sklearn", "skl2onnx", "onnxmltools", "xgboost", "lightgbm", "mlflow", "skops", "joblib", "cloudpickle"}
ROOTS = ("streamer.app", "streamer.serve", "streamer.cli.worker")


def file_of(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imports_of(path: Path, module: str) -> set[str]:
    """Every module an import statement anywhere in ``path`` names (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_what_a_worker_can_reach_never_unpickles() -> None:
    seen: dict[str, set[str]] = {}
    todo = list(ROOTS)
    while todo:
        module = todo.pop()
        path = file_of(module)
        if module in seen or path is None:
            continue
        seen[module] = imports_of(path, module)
        for name in seen[module]:
            if name.startswith("streamer."):
                parts = name.split(".")
                todo += [".".join(parts[:k]) for k in range(2, len(parts) + 1)]
    assert len(seen) > 40, "the walk found the worker's modules"
    assert not [m for m in seen if m.startswith("streamer.model_import")]
    offenders = {m: sorted(n for n in names if n.split(".")[0] in PICKLERS) for m, names in seen.items()}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_a_loaded_worker_has_no_model_import_library() -> None:
    probe = f"""
import json, sys
import streamer.cli  # what `streamer worker` loads first: every command group, `models import` included
import streamer.app, streamer.serve, streamer.engines.confluent, streamer.engines.faust
libraries = {sorted(IMPORT_ONLY)!r}
modules = [m for m in sys.modules if m.split(".")[0] in libraries or m.startswith("streamer.model_import")]
files = [getattr(m, "__file__", None) or "" for n, m in list(sys.modules.items()) if n.startswith("streamer")]
print(json.dumps({{"modules": sorted(modules), "files": sorted(files)}}))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["modules"] == []
    picklers = [
        f for f in loaded["files"] if f and {n.split(".")[0] for n in imports_of(Path(f), "streamer.x")} & PICKLERS
    ]
    assert picklers == []
