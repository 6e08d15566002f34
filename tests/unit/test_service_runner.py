"""``services.runner.Service``: the retry policy of every background job, read from the error.

A non-retriable ``StreamerError`` stops the service at once with one CRITICAL line and one call of its
``on_fatal`` hook; a retriable one, or an unclassified exception, is retried after the backoff and counted.
No sleeps: steps signal through events, and every wait is bounded (generous, for a busy machine).
"""

from __future__ import annotations

import logging
import threading

import pytest

from streamer.core.errors import ConfigError, StateStoreError, StreamerError
from streamer.services import runner
from streamer.services.runner import Background, Service

BOUND_S = 30.0


class Steps:
    """A step that raises each of ``errors`` in turn, then sets ``done`` and has nothing more to do."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.done = threading.Event()

    def __call__(self) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()
        return False


def critical_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]


@pytest.mark.parametrize(
    "error",
    [
        StateStoreError("redis apply_labels: the server refused the credentials; set redis.url", retriable=False),
        ConfigError("redis.ssl_* settings need a rediss:// URL (TLS)"),
    ],
    ids=["refused-by-redis", "configuration"],
)
def test_a_non_retriable_error_stops_the_service_with_one_line_and_one_report(
    error: StreamerError, caplog: pytest.LogCaptureFixture
) -> None:
    steps = Steps(error)
    reported: list[tuple[str, StreamerError]] = []
    retried: list[BaseException] = []
    stopped = threading.Event()
    service = Service(
        "labels",
        steps,
        on_error=retried.append,
        on_stop=stopped.set,
        on_fatal=lambda name, exc: reported.append((name, exc)),
        error_backoff_s=0.0,
    )
    with caplog.at_level(logging.INFO):
        service.start()
        assert stopped.wait(BOUND_S)
    service.stop()
    assert steps.calls == 1 and not steps.done.is_set()  # never stepped again
    assert reported == [("labels", error)] and not retried and service.fatal is error and service.stopping
    (line,) = critical_lines(caplog)
    assert "labels" in line and str(error) in line and "\n" not in line


def test_retriable_and_unclassified_errors_are_retried_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    down = StateStoreError("redis apply_labels: Connection refused")  # retriable by default
    bug = KeyError("a bug, not a policy")
    steps = Steps(down, bug, down)
    counted: list[BaseException] = []
    reported: list[tuple[str, StreamerError]] = []
    service = Service(
        "labels",
        steps,
        on_error=counted.append,
        on_fatal=lambda name, exc: reported.append((name, exc)),
        error_backoff_s=0.0,
    )
    service.start()
    assert steps.done.wait(BOUND_S)
    service.stop()
    assert counted == [down, bug, down] and not reported and service.fatal is None
    assert not critical_lines(caplog)


def test_the_wiring_sets_the_hook_on_a_built_service_and_a_failing_hook_still_stops_it() -> None:
    class Job(Background):
        def __init__(self) -> None:
            self.service = Service("job", Steps(StateStoreError("refused", retriable=False)), error_backoff_s=0.0)

    job = Job()
    called = threading.Event()

    def hook(name: str, error: StreamerError) -> None:
        called.set()
        raise RuntimeError("the hook itself failed")

    job.set_fatal_hook(hook)
    job.start()
    assert called.wait(BOUND_S)
    job.service._thread.join(BOUND_S)
    assert not job.service._thread.is_alive() and job.service.fatal is not None
    job.stop()


def test_without_a_hook_a_non_retriable_error_still_stops_the_service() -> None:
    service = Service("job", Steps(StateStoreError("refused", retriable=False)), error_backoff_s=0.0)
    service.start()
    service._thread.join(BOUND_S)
    assert not service._thread.is_alive() and isinstance(service.fatal, StateStoreError)


def test_a_service_without_a_hook_of_its_own_reports_to_the_process_hook_one_failure_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the worker and ``streamer serve`` set before building any service: no service can stop unheard, and
    when two stop at once the first one's line and hook come alone (a hook that exits leaves one CRITICAL line)."""
    inside = threading.Event()
    release = threading.Event()
    heard: list[tuple[str, int]] = []

    def hook(name: str, error: StreamerError) -> None:
        heard.append((name, len(critical_lines(caplog))))
        inside.set()
        release.wait(BOUND_S)

    first = Service("labels", Steps(StateStoreError("refused", retriable=False)), error_backoff_s=0.0)
    second = Service("control", Steps(StateStoreError("refused too", retriable=False)), error_backoff_s=0.0)
    runner.set_process_fatal_hook(hook)
    try:
        with caplog.at_level(logging.INFO):
            first.start()
            assert inside.wait(BOUND_S)
            second.start()
            assert second._stop.wait(BOUND_S)  # it stopped stepping; its line waits for the first one's hook
            assert len(critical_lines(caplog)) == 1  # the second waits for the first's hook
            release.set()
            first.stop(BOUND_S)
            second.stop(BOUND_S)
    finally:
        runner.set_process_fatal_hook(None)
    assert heard == [("labels", 1), ("control", 2)]
