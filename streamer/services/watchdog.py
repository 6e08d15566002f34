"""The watchdog: no partition may hold work without progress for longer than ``stall_timeout_s``.

A partition's ledger knows how long it has held work (an open batch, a batch being scored, a result waiting
for an earlier one, an undelivered release) without anything moving (``PartitionLedger.stalled_for``). This
service asks every second, from its own thread -- so it sees a stall even when the event loop itself is stuck
-- and on the first partition past the bound it counts it and calls ``on_stall`` with a ``Stalled`` error naming
the partition and the time: the worker logs it, turns ``/ready`` to 503 and exits non-zero, and the next
owner of the partition recovers by read-back. A worker that cannot make progress never sits alive and stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from streamer.core.errors import Stalled
from streamer.services.runner import Background, Service


class Watchdog(Background):
    def __init__(
        self,
        stalled: Callable[[float], list[tuple[int, float]]],
        bound_s: float,
        on_stall: Callable[[Stalled], None],
        observer: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stalled, self._bound_s, self._on_stall, self._observer, self._clock = (
            stalled,
            bound_s,
            on_stall,
            observer,
            clock,
        )
        self.service = Service("watchdog", self.check, interval_s=min(1.0, bound_s / 4))

    def check(self) -> bool:
        worst = max(self._stalled(self._clock()), key=lambda item: item[1], default=None)
        if worst is not None and worst[1] > self._bound_s:
            partition, seconds = worst
            self._observer.on_stalled(partition, seconds)
            error = Stalled(
                f"partition {partition} has held work for {seconds:.1f} s without progress "
                f"(worker.stall_timeout_s = {self._bound_s:g}); exiting so that its next owner recovers it",
                partition=partition,
            )
            self._on_stall(error)  # says it, as the worker's one CRITICAL line
        return False
