"""No import cycle anywhere in ``streamer/``, hidden or not.

Every ``.py`` file under ``streamer/`` is parsed and every import statement counts, at any depth: at module level,
inside a function (the usual way to hide a cycle), inside ``if TYPE_CHECKING:``. ``from package import name``
points at ``package.name`` when that is a module, else at the package. A cycle is named module by module, so
the failure says which import to move. Lazy imports kept for start-up speed (a heavy library inside a CLI
command) are fine: they point outside the package or close no cycle.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(root, path): path for path in sorted((root / "streamer").rglob("*.py"))}


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that ``path`` (module ``name``) imports, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
                elif target in modules:
                    found.add(target)
    found.discard(name)
    return found


def graph_of(root: Path) -> dict[str, set[str]]:
    modules = modules_of(root)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:
        # iterative Tarjan: the graph is deep enough to make recursion fragile
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [_closed_path(graph, set(component)) for component in components]


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]`` (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    return [*paths[node], start]
                if successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # a component always has one


def test_streamer_has_no_import_cycle() -> None:
    found = cycles(graph_of(PACKAGE_ROOT))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_every_name_imported_from_the_package_exists_also_inside_functions() -> None:
    """A lazy import is checked only when its function runs: a module moved or a name renamed would break a
    command at its first use. Every ``from streamer... import name`` at any depth must resolve now."""
    broken, modules = [], modules_of(PACKAGE_ROOT)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("streamer"):
                module = importlib.import_module(node.module)  # type: ignore[arg-type]
                for alias in node.names:
                    if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in modules_of(
                        PACKAGE_ROOT
                    ):
                        broken.append(f"{name}: from {node.module} import {alias.name}")
    assert not broken, "\n".join(broken)


def test_the_graph_sees_every_module_and_imports_inside_functions() -> None:
    graph = graph_of(PACKAGE_ROOT)
    assert {"streamer.app", "streamer.serve", "streamer.wiring", "streamer.pipeline", "streamer.core.ledger"} <= set(
        graph
    )
    assert "streamer.app" in graph["streamer.cli.worker"]  # imported inside the command function


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, source in {"streamer/__init__.py": "", **files}.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        (  # hidden inside a function, as app.py and serve.py once did
            {"streamer/a.py": "import streamer.b\n", "streamer/b.py": "def f():\n    from streamer import a\n"},
            ["streamer.a", "streamer.b", "streamer.a"],
        ),
        (  # relative imports, a subpackage, three modules
            {
                "streamer/p/__init__.py": "",
                "streamer/p/x.py": "from . import y\n",
                "streamer/p/y.py": "from ..z import thing\n",
                "streamer/z.py": "from streamer.p.x import other\n",
            },
            ["streamer.p.x", "streamer.p.y", "streamer.z", "streamer.p.x"],
        ),
        (  # behind TYPE_CHECKING still counts: the design has the cycle
            {
                "streamer/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from streamer.b import B\n",
                "streamer/b.py": "from streamer.a import A\n",
            },
            ["streamer.a", "streamer.b", "streamer.a"],
        ),
    ],
)
def test_the_check_names_a_cycle(tmp_path: Path, files: dict[str, str], cycle: list[str]) -> None:
    assert cycles(graph_of(_package(tmp_path, files))) == [cycle]


def test_a_package_importing_its_modules_and_outside_libraries_is_no_cycle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "streamer/p/__init__.py": "from streamer.p.x import X\n",
            "streamer/p/x.py": "import json\nimport numpy\nfrom streamer import q\n",
            "streamer/q.py": "def f():\n    import faust\n",
        },
    )
    assert cycles(graph_of(root)) == []
