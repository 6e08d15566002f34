"""One shape for every background job: a named daemon thread that runs ``step()`` until stopped.

``step`` returns True when it did work (run it again at once) and False when there was nothing to do (wait
``interval_s`` first): a consumer loop and a run-every-N-seconds check are the same thing. ``on_stop`` runs on
the service's thread after its last step (close a consumer, drain a queue). ``stop`` is idempotent and bounded.

What a failed step leads to is decided here, once, from the error's policy (``core.errors``):

- a ``StreamerError`` that is not ``retriable`` (Redis refused the credentials or a permission, a setting is
  wrong, the shared state is unreadable) cannot be fixed by doing the same thing again: the service stops, logs
  one CRITICAL line naming the cause (the error's message says what to fix) and calls ``on_fatal(name, error)``,
  which the wiring turns into the worker's exit. Retrying would hide it: a label consumer retrying a wrong
  password forever looks alive while no label is ever applied;
- anything else (a retriable ``StreamerError``, or an exception nobody classified) is logged with its traceback,
  reported to ``on_error`` (a metric) and followed by ``error_backoff_s`` of rest: a background job never dies
  silently and never spins on a failure.

Services that hold work through an outage (the label consumer, the prediction log, ...) catch the adapter's
error themselves to keep their batch, and re-raise it when it is not ``retriable`` so that this policy applies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from streamer.core.errors import StreamerError

log = logging.getLogger(__name__)

FatalHook = Callable[[str, StreamerError], None]
"""``on_fatal(service_name, error)``: the service ``service_name`` stopped on ``error``, a ``StreamerError``
whose ``retriable`` is False. Called once, on the service's own thread, after the CRITICAL line was logged and
before ``on_stop``; it may end the process (``os._exit``) or hand the error to the worker's loop, and must not
wait for the service itself (``stop`` from its own thread returns at once)."""

_process_hook: FatalHook | None = None
_stopping_on = threading.Lock()  # one failure at a time says its line and calls its hook


def set_process_fatal_hook(hook: FatalHook | None) -> None:
    """The hook of every service that has none of its own (``Service.on_fatal``), set once by a composition root
    before it builds any service (the worker and ``streamer serve`` exit with the error's code), so that no service
    built anywhere -- now or later -- can stop unheard. When several stop at once, the first one's line and hook
    come first and alone: a hook that ends the process leaves exactly one CRITICAL line."""
    global _process_hook
    _process_hook = hook


class Service:
    def __init__(
        self,
        name: str,
        step: Callable[[], bool | None],
        *,
        interval_s: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        on_fatal: FatalHook | None = None,
        error_backoff_s: float = 1.0,
    ) -> None:
        self.name = name
        self._step = step
        self._interval_s = interval_s
        self._on_error = on_error
        self._on_stop = on_stop
        self.on_fatal = on_fatal  # public: the wiring sets it after a service built its Service (Background)
        self._error_backoff_s = error_backoff_s
        self.fatal: StreamerError | None = None  # the error the service stopped on, if any
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"streamer-{name}", daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> Service:
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the service to stop after its current step, without waiting (``stop`` waits)."""
        self._stop.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("service %s did not stop within %.0f s", self.name, timeout_s)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless stopped; True if stopped (for steps that wait inside)."""
        return self._stop.wait(seconds)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    busy = self._step()
                except StreamerError as exc:
                    if not exc.retriable:
                        self._stop_on(exc)
                        return
                    self._failed(exc)
                    continue
                except Exception as exc:
                    self._failed(exc)
                    continue
                if not busy:
                    self._stop.wait(self._interval_s)
        finally:
            if self._on_stop is not None:
                try:
                    self._on_stop()
                except Exception:
                    log.exception("service %s failed while stopping", self.name)

    def _failed(self, exc: Exception) -> None:
        """A failure a later step may not meet: log it, count it, rest."""
        log.exception("service %s failed; retrying in %.1f s", self.name, self._error_backoff_s)
        if self._on_error is not None:
            self._on_error(exc)
        self._stop.wait(self._error_backoff_s)

    def _stop_on(self, error: StreamerError) -> None:
        """A failure no retry can fix: one line, the hook (its own, else the process's), and no more steps."""
        self.fatal = error
        self._stop.set()
        hook = self.on_fatal or _process_hook
        with _stopping_on:
            log.critical("service %s stopped, not retriable: %s", self.name, error)
            if hook is not None:
                try:
                    hook(self.name, error)
                except Exception:
                    log.exception("service %s: on_fatal failed", self.name)


class Stoppable(Protocol):
    """Anything a composition root starts and must stop at exit (a service, a server, a watcher)."""

    def stop(self) -> None: ...


class Background:
    """Base of the services: owns one ``Service`` (set by the subclass) and starts and stops it."""

    service: Service

    def set_fatal_hook(self, hook: FatalHook) -> None:
        """Where the service reports the error it stopped on (``FatalHook``); set it before ``start``."""
        self.service.on_fatal = hook

    def start(self) -> None:
        self.service.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.service.stop(timeout_s)
