"""The fault watch: Kafka client errors that do not clear within ``kafka.error_timeout_s`` stop the worker.

The engines report what their clients say -- an error seen (``seen``), a condition over (``clear``), the
assigned partitions' positions (``fetched``) -- from whatever thread they run on (librdkafka's consume thread,
Faust's event loop, the producer's poll thread); ``core.kafka_faults.FaultClock`` decides. This service asks it
every second, from its own thread (a wedged loop cannot hide a fault), and on the first overdue fault calls
``on_fatal`` with a ``PersistentKafkaError`` (exit 7) whose message names the cause and the fix: the worker logs
it as its one CRITICAL line, turns ``/ready`` to 503 and exits, where it used to sit alive, unready and answering
nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from streamer.core.errors import PersistentKafkaError
from streamer.core.kafka_faults import PRODUCER, FaultClock, Overdue
from streamer.services.runner import Background, Service


class FaultWatch(Background):
    def __init__(
        self,
        bound_s: float,
        on_fatal: Callable[[PersistentKafkaError], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._faults = FaultClock(bound_s)
        self._on_fatal, self._clock = on_fatal, clock
        self._lock = threading.Lock()  # the reporters run on several threads; the clock is plain data
        self._reported = False
        self._started = False
        self.service = Service("kafka-faults", self.check, interval_s=min(1.0, bound_s / 4))

    @property
    def bound_s(self) -> float:
        return self._faults.bound_s

    def seen(self, kind: str, subject: str, detail: str) -> None:
        with self._lock:
            self._faults.seen(kind, subject, detail, self._clock())

    def clear(self, *kinds: str, subject: str | None = None) -> None:
        with self._lock:
            self._faults.clear(*kinds, subject=subject)

    def clear_producer(self) -> None:
        self.clear(PRODUCER)

    def fetched(self, topic: str, positions: Mapping[int, tuple[int | None, int | None]], wanting: bool) -> None:
        with self._lock:
            self._faults.fetched(topic, positions, self._clock(), wanting)

    def overdue(self) -> Overdue | None:
        with self._lock:
            return self._faults.overdue(self._clock())

    def start(self) -> None:
        """Idempotent: each engine starts it when its consumer subscribes."""
        if not self._started:
            self._started = True
            super().start()

    def check(self) -> bool:
        """One verdict a second; ``on_fatal`` says it (one CRITICAL line) and ends the worker."""
        verdict = self.overdue()
        if verdict is not None and not self._reported and not self.service.stopping:
            self._reported = True
            self._on_fatal(PersistentKafkaError(verdict.message(self.bound_s)))
        return False
