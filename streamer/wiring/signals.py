"""SIGTERM and SIGINT, handled in one place for every long-running mode, from the first moment of the process.

A process manager stops a worker or ``streamer serve`` with SIGTERM, a user with Ctrl-C (SIGINT); both mean "stop
cleanly", whenever they come: while the interpreter imports onnxruntime, while the worker waits for the broker,
loads its models, or while Faust assigns partitions. A stop during the start is exit 0 (nothing was consumed).

The handler only *records* the request (``StopRequests.handle``), and calls the stop callback of the mode that
is running, once one is registered (``on_stop``: the batch engine sets its loop's stop event, ``streamer serve``
its stop event). It never raises: an exception raised by a handler lands in whatever the main thread runs at that
moment, and some code does not survive it -- a ``SystemExit`` raised inside ``import onnxruntime`` surfaces as
``ImportError: initialization failed`` (exit 1), one raised inside Faust's partition assignment crashed its worker
(both measured). Start-up instead asks between its steps (``exit_if_requested``), and its long waits sleep in
slices that end early on a request (``sleep``), so a stop during the start takes effect within one step.

Invariants:

1. ``install`` is the first thing the entry point (``streamer.launch``) does, before the heavy imports; from then
   on no stop signal ends the process by the signal. It also unblocks both signals: a launcher that blocks them
   across the interpreter's own start (``adapters.devstack.start_worker`` does, so that a signal sent before any
   streamer code runs waits for this handler) hands them over here, where a pending one is delivered at once.
2. A request is recorded once (the first signal wins) and never forgotten; every callback registered before or
   after it is called with it exactly once.
3. Python runs signal handlers on the main thread only, between bytecodes; a callback that touches an event loop
   goes through ``call_soon_threadsafe``, which wakes the loop. Faust's worker installs its own handlers when it
   starts (``adapters.faust_consumer.StreamerWorker``), and re-sends a request recorded before them.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SLEEP_SLICE_S = 0.1

log = logging.getLogger("streamer.worker")

StopCallback = Callable[[signal.Signals], None]


class StopRequests:
    """What the stop signals asked for, and who hears about it. One instance per process (``STOP``)."""

    def __init__(self) -> None:
        self.requested: signal.Signals | None = None
        self._callbacks: list[StopCallback] = []

    def handle(self, signum: int, _frame: FrameType | None = None) -> None:
        """The signal handler: record the first request and tell the registered callbacks; never raises."""
        if self.requested is not None:
            return
        self.requested = signal.Signals(signum)
        for callback in list(self._callbacks):
            callback(self.requested)

    def on_stop(self, callback: StopCallback) -> None:
        """``callback(signal)`` on a stop request: at once if one was recorded already, else when it comes."""
        self._callbacks.append(callback)
        if self.requested is not None:
            callback(self.requested)

    def exit_if_requested(self, step: str) -> None:
        """Between the steps of a start: a recorded request ends the process here with exit 0."""
        if self.requested is not None:
            log.info("stopped by %s before serving (%s)", self.requested.name, step)
            raise SystemExit(0)

    def sleep(
        self,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Sleep up to ``seconds`` in slices of ``SLEEP_SLICE_S``; True as soon as a stop is requested."""
        deadline = clock() + seconds
        while self.requested is None:
            left = deadline - clock()
            if left <= 0:
                return False
            pause(min(left, SLEEP_SLICE_S))
        return True


STOP = StopRequests()


def install() -> None:
    """From now on SIGTERM and SIGINT are recorded in ``STOP`` (call it on the main thread; idempotent)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, STOP.handle)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def restore_defaults() -> None:
    """Python's usual behaviour back (a command that is not a long-running mode): SIGINT raises
    KeyboardInterrupt, SIGTERM ends the process."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exiting() -> None:
    """The process is exiting: stop signals are ignored from now on. The interpreter resets the handlers it
    installed to the default action as it finalizes (and asyncio's loop does when it closes), so a signal in
    those last moments would otherwise end an exit 0 as a death by the signal (-15, measured); an ignored signal
    is left as it is."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def block_in_child() -> None:
    """For a launcher's ``preexec_fn``: the child starts with both stop signals blocked (pending, not lost)
    until ``install`` unblocks them, so that not even the interpreter's own start dies by the signal."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def on_stop(callback: StopCallback) -> None:
    """``callback(signal)`` on a stop request (at once if one came already); installs the handler if needed."""
    install()
    STOP.on_stop(callback)


def exit_if_requested(step: str) -> None:
    STOP.exit_if_requested(step)


def sleep(seconds: float) -> bool:
    return STOP.sleep(seconds)
