"""One shape for every background job: a named daemon thread that runs ``step()`` until stopped.

``step`` returns True when it did work (run it again at once) and False when there was nothing to do (wait
``interval_s`` first): a consumer loop and a run-every-N-seconds check are the same thing. An exception in a
step is logged with its traceback, reported to ``on_error`` (a metric) and followed by ``error_backoff_s`` of
rest: a background job never dies silently and never spins on a failure. ``on_stop`` runs on the service's
thread after its last step (close a consumer, drain a queue). ``stop`` is idempotent and bounded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Service:
    def __init__(
        self,
        name: str,
        step: Callable[[], bool | None],
        *,
        interval_s: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        error_backoff_s: float = 1.0,
    ) -> None:
        self.name = name
        self._step = step
        self._interval_s = interval_s
        self._on_error = on_error
        self._on_stop = on_stop
        self._error_backoff_s = error_backoff_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"streamer-{name}", daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> Service:
        self._thread.start()
        return self

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
                except Exception as exc:
                    log.exception("service %s failed; retrying in %.1f s", self.name, self._error_backoff_s)
                    if self._on_error is not None:
                        self._on_error(exc)
                    self._stop.wait(self._error_backoff_s)
                    continue
                if not busy:
                    self._stop.wait(self._interval_s)
        finally:
            if self._on_stop is not None:
                try:
                    self._on_stop()
                except Exception:
                    log.exception("service %s failed while stopping", self.name)


class Background:
    """Base of the services: owns one ``Service`` (set by the subclass) and starts and stops it."""

    service: Service

    def start(self) -> None:
        self.service.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.service.stop(timeout_s)
