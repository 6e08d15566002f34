"""What the CLI prints for a mistake, and at which level it logs: outside text verbatim, one line, quiet by
default (``cli.base``, ``cli.os_error_line``, ``logs``, the model events' levels)."""

from __future__ import annotations

import errno
import io
import logging
from collections.abc import Iterator

import pytest
from rich.console import Console

from streamer import logs
from streamer.cli import base, os_error_line
from streamer.services.quality_monitor import ROUTINE_EVENTS, event_level


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(base, "err", Console(file=buffer, width=200, force_terminal=False))
    return buffer


@pytest.mark.parametrize(
    "message",
    [
        "models freeze: fraud@1 is not an online model (its card has no [online])",
        "unknown section [workers] (from streamer.toml): did you mean [worker]?",
        "graph show: no graph named '[/bold]'",
        "no model named '[red]x' in models",
    ],
)
def test_an_error_is_printed_as_written_never_as_markup(captured: io.StringIO, message: str) -> None:
    base.error(message)
    assert captured.getvalue() == f"error: {message}\n"


def test_a_warning_and_a_table_cell_keep_their_brackets(captured: io.StringIO) -> None:
    base.warning("card has no [online]")
    assert captured.getvalue() == "warning: card has no [online]\n"
    assert base.plain("[/bold]").plain == "[/bold]"


def test_an_os_error_names_the_path_and_the_fix() -> None:
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "nope.jsonl")
    assert os_error_line(missing) == "nope.jsonl: No such file or directory (check the path)"
    denied = PermissionError(errno.EACCES, "Permission denied", "/root/x")
    assert os_error_line(denied) == "/root/x: Permission denied (check its permissions)"
    assert os_error_line(OSError(errno.EIO, "Input/output error")) == "Input/output error"


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """These tests reconfigure logging: the process's set-up comes back after each."""
    root = logging.getLogger()
    level, handlers, default = root.level, list(root.handlers), logs._default
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    logs._default = default


@pytest.mark.parametrize(
    ("verbosity", "long_running", "expected"),
    [(0, False, "WARNING"), (1, False, "INFO"), (2, False, "DEBUG"), (0, True, "INFO"), (1, True, "DEBUG")],
)
def test_commands_are_quiet_unless_asked_and_the_worker_logs_info(
    monkeypatch: pytest.MonkeyPatch, verbosity: int, long_running: bool, expected: str
) -> None:
    monkeypatch.delenv("STREAMER_LOG_LEVEL", raising=False)
    monkeypatch.setattr(base._State, "verbosity", verbosity)
    base.configure_logs(long_running)
    assert logs.level() == expected
    assert logging.getLogger().level == logging.getLevelNamesMapping()[expected]


def test_streamer_log_level_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_LOG_LEVEL", "error")
    logs.configure("INFO")
    assert logs.level() == "ERROR"
    monkeypatch.setenv("STREAMER_LOG_LEVEL", "nonsense")  # not a level: the default
    assert logs.level() == "INFO"


def test_routine_model_events_are_info_and_the_rest_warnings() -> None:
    assert {kind for kind in ROUTINE_EVENTS if event_level(kind, {}) != logging.INFO} == set()
    for kind in ("model-refused", "accuracy-below-floor", "feature-drift", "model-rolled-back"):
        assert event_level(kind, {}) == logging.WARNING
    assert event_level("concept-drift", {"direction": "rise"}) == logging.WARNING
    assert event_level("concept-drift", {"direction": "fall"}) == logging.INFO
