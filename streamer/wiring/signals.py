"""SIGTERM and SIGINT, handled in one place for every long-running mode.

A process manager stops a worker or ``streamer serve`` with SIGTERM, a user with Ctrl-C (SIGINT); both mean "stop
cleanly". ``on_stop_signals`` routes both to one callback: the worker's start-up stops at once with exit 0
(nothing consumed yet), the batch engine sets its loop's stop event, ``streamer serve`` its stop event. The
Faust engine's worker installs its own handlers when it starts (its lifecycle drains and commits).

Python runs signal handlers on the main thread only, between bytecodes; a handler that touches an event loop
goes through ``call_soon_threadsafe``, which wakes the loop.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(stop: Callable[[signal.Signals], None]) -> None:
    """From now on SIGTERM and SIGINT call ``stop(signal)`` (call this on the main thread)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop(signal.Signals(signum))

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
