"""Each test in its tier: no module under ``tests/unit/`` or ``tests/property/`` imports what opens a socket or
starts a process, or asks for the embedded servers' fixtures.

Unit and property tests run in milliseconds on a busy machine and fail only on their own code; whatever needs a
listener, a connection or a child process belongs in ``tests/integration/`` (or ``tests/e2e/``). Imports are
parsed (``ast``), not run, so an import inside a function counts too; a fixture counts when a test or fixture
function of the module takes it as a parameter. ``ALLOWED`` lists the exceptions, each with its reason.

``tests/README.md`` maps each behaviour to its test files; every test module must be on that map.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "property")

# module -> what it does that the fast tiers must not
FORBIDDEN = {
    "socket": "opens sockets",
    "socketserver": "listens on a socket",
    "subprocess": "starts processes",
    "multiprocessing": "starts processes",
    "http.client": "opens connections",
    "http.server": "listens on a socket",
    "urllib.request": "opens connections",
    "requests": "opens connections",
    "streamer.adapters.devstack": "starts the embedded broker and redis-server",
    "streamer.adapters.http_endpoints": "listens on a socket (/metrics, /health)",
    "streamer.oip.http": "listens on a socket (the OIP server)",
    "streamer.adapters.listening": "binds sockets (whether a port is free)",
}
DEVSTACK_FIXTURES = {"kafka_broker", "redis_server", "topic_factory", "stack_logs"}
# (file relative to tests/, module or fixture) -> why it may
ALLOWED = {
    ("unit/test_metrics_host.py", "streamer.adapters.http_endpoints"): (
        "binds a loopback listener on port 0 and reads back its address, the only way to see the host the "
        "metrics endpoint binds; no connection is made"
    ),
}


def used(source: str) -> set[str]:
    """Every module the source imports (``from a import b`` counts as ``a`` and ``a.b``) and every devstack
    fixture a function of it takes."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            found.update(a.arg for a in arguments if a.arg in DEVSTACK_FIXTURES)
    return found


def violations(source: str) -> dict[str, str]:
    """What of ``used(source)`` the fast tiers must not use -> why."""
    out: dict[str, str] = {}
    for name in used(source):
        if name in DEVSTACK_FIXTURES:
            out[name] = "a fixture of the embedded servers"
            continue
        for module, why in FORBIDDEN.items():
            if name == module or name.startswith(module + "."):
                out[name if name == module else module] = why
    return out


def test_the_check_sees_every_form_of_import_and_the_fixtures() -> None:
    source = (
        "import socket\nimport http.client as hc\nfrom http import server\nfrom urllib.request import urlopen\n"
        "def helper():\n    import subprocess\n"
        "def test_x(redis_server, tmp_path):\n    pass\n"
        "async def fixture(*, topic_factory):\n    pass\n"
        "from . import sibling\nimport json, msgspec\n"
    )
    assert set(violations(source)) == {
        "socket",
        "http.client",
        "http.server",
        "urllib.request",
        "subprocess",
        "redis_server",
        "topic_factory",
    }
    assert violations("import requests_toolbelt_like_name\nfrom httpx import Client\n") == {}


@pytest.mark.parametrize("tier", TIERS)
def test_no_fast_test_opens_a_socket_or_starts_a_process(tier: str) -> None:
    found = {}
    for path in sorted((TESTS / tier).rglob("*.py")):
        relative = path.relative_to(TESTS).as_posix()
        for name, why in violations(path.read_text()).items():
            if (relative, name) not in ALLOWED:
                found[f"{relative}: {name}"] = why
    assert not found, "move these tests to tests/integration/ (or allow-list them with a reason): " + str(found)


def test_every_allowed_exception_is_still_needed() -> None:
    """An allow-list entry whose import went away is removed, so that the list stays the exceptions."""
    for relative, name in ALLOWED:
        assert name in used((TESTS / relative).read_text()), (relative, name)


def test_every_test_module_is_on_the_map_of_tests_readme() -> None:
    """A new test file gets its line in tests/README.md (the behaviour it covers), so the map stays whole."""
    listed = (TESTS / "README.md").read_text()
    missing = [
        path.relative_to(TESTS).as_posix()
        for path in sorted(TESTS.rglob("test_*.py"))
        if f"`{path.relative_to(TESTS).as_posix()}`" not in listed
    ]
    assert not missing, f"add these to the map in tests/README.md: {missing}"
