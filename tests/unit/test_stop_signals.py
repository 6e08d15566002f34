"""The stop-signal recorder (``wiring.signals``): the handler records and tells, never raises; the start asks.

The handler is called directly, as the interpreter calls it: no signal is sent to the test process.
"""

from __future__ import annotations

import ast
import signal
import tomllib

import pytest

from streamer.launch import LONG_RUNNING, command_of
from streamer.wiring.signals import StopRequests
from tests.conftest import REPO

# what the entry point may import before its handler is in place: the standard library's light modules
LIGHT = {"__future__", "signal", "sys", "time", "logging", "json", "os", "typing", "collections", "types", "streamer"}


def test_the_handler_records_the_first_request_and_never_raises() -> None:
    stop = StopRequests()
    assert stop.requested is None
    stop.exit_if_requested("a step")  # nothing requested: the start goes on
    assert stop.handle(signal.SIGTERM) is None
    stop.handle(signal.SIGINT)
    assert stop.requested is signal.SIGTERM  # the first one wins


def test_a_recorded_request_ends_the_start_at_its_next_step_with_exit_0() -> None:
    stop = StopRequests()
    stop.handle(signal.SIGINT)
    with pytest.raises(SystemExit) as exited:
        stop.exit_if_requested("loading the models")
    assert exited.value.code == 0


def test_callbacks_hear_of_the_request_once_whether_registered_before_or_after_it() -> None:
    stop = StopRequests()
    heard: list[tuple[str, signal.Signals]] = []
    stop.on_stop(lambda s: heard.append(("before", s)))
    stop.handle(signal.SIGTERM)
    stop.handle(signal.SIGTERM)
    stop.on_stop(lambda s: heard.append(("after", s)))
    assert heard == [("before", signal.SIGTERM), ("after", signal.SIGTERM)]


def test_a_long_wait_sleeps_in_slices_and_ends_within_one_slice_of_a_request() -> None:
    stop = StopRequests()
    now = [0.0]
    slices: list[float] = []

    def pause(seconds: float) -> None:  # a fake sleep: the clock moves on; a request comes in the fourth slice
        slices.append(seconds)
        now[0] += seconds
        if len(slices) == 4:
            stop.handle(signal.SIGTERM)

    assert stop.sleep(0.25, lambda: now[0], pause) is False  # no request: the whole wait, in slices
    assert slices == pytest.approx([0.1, 0.1, 0.05])
    assert stop.sleep(3600.0, lambda: now[0], pause) is True
    assert len(slices) == 4 and now[0] == pytest.approx(0.35)  # ended at the request, not after an hour
    assert stop.sleep(3600.0, lambda: now[0], pause) is True and len(slices) == 4  # requested: no sleep at all


def test_the_entry_points_install_the_handler_before_any_heavy_import() -> None:
    """The console script and ``python -m streamer`` go through ``streamer.launch``, whose module level imports
    only the handler and the logging set-up (both standard library only): the CLI comes after the handler."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["streamer"] == "streamer.launch:main"
    assert "from streamer.launch import main" in (REPO / "streamer" / "__main__.py").read_text()
    for module in ("launch.py", "logs.py", "wiring/signals.py", "wiring/__init__.py"):
        tree = ast.parse((REPO / "streamer" / module).read_text())
        top_level = {
            alias.name if isinstance(node, ast.Import) else node.module or ""
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        heavy = {name for name in top_level if name.split(".")[0] not in LIGHT}
        assert not heavy, f"streamer/{module} imports {heavy} before the stop handler is installed"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["worker"], "worker"),
        (["--config", "streamer.toml", "serve", "--port", "0"], "serve"),
        (["--config=x.toml", "worker"], "worker"),
        (["produce", "--count", "10"], "produce"),
        (["models", "list"], "models"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_entry_point_finds_the_command_whatever_root_options_come_first(argv: list[str], command: str) -> None:
    assert command_of(argv) == command


def test_the_long_running_modes_the_entry_point_names_are_commands_of_the_cli() -> None:
    from streamer.cli import app

    names = {info.name for info in app.registered_commands}
    assert set(LONG_RUNNING) <= names
    assert "--config" in (REPO / "streamer" / "cli" / "base.py").read_text()  # ROOT_OPTIONS_WITH_VALUE's source
