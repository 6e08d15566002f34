"""Per-partition reorder buffer: results leave in the order their requests were consumed.

Batches of one partition may finish out of order (several are in flight on a thread pool). The shell calls
``expect(offset)`` as each request is consumed (offsets strictly increase, gaps allowed: transaction markers
and compaction leave holes), ``push(offset, result)`` when its result is ready, and sends whatever
``pop_ready()`` returns. Invariants, checked by a state-machine test against a sorted-list model: released
offsets strictly increase; every expected offset is released exactly once, never before all earlier ones;
``committable_offset()`` (the Kafka commit position: last released + 1) never goes backwards.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

R = TypeVar("R")
_PENDING = object()


class ReorderBuffer(Generic[R]):
    __slots__ = ("_committable", "_last_expected", "_order", "_results")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._results: dict[int, object] = {}
        self._committable: int | None = None
        self._last_expected: int | None = None

    def expect(self, offset: int) -> None:
        """Register the next consumed offset; it must be greater than every offset registered before."""
        if self._last_expected is not None and offset <= self._last_expected:
            raise ValueError(f"offset {offset} registered after {self._last_expected}: offsets must increase")
        self._last_expected = offset
        self._order.append(offset)
        self._results[offset] = _PENDING

    def push(self, offset: int, result: R) -> None:
        """Hand in the result of an expected offset (once)."""
        if self._results.get(offset, None) is not _PENDING:
            raise KeyError(f"offset {offset} is not awaiting a result")
        self._results[offset] = result

    def pop_ready(self) -> list[tuple[int, R]]:
        """Every result at the head whose predecessors have all been released, in offset order."""
        ready: list[tuple[int, R]] = []
        order, results = self._order, self._results
        while order and results[order[0]] is not _PENDING:
            offset = order.popleft()
            ready.append((offset, results.pop(offset)))  # type: ignore[arg-type]
        if ready:
            self._committable = ready[-1][0] + 1
        return ready

    def committable_offset(self) -> int | None:
        """The position to commit: one past the last released offset (None before the first release)."""
        return self._committable

    def __len__(self) -> int:
        """Requests waiting: in flight or finished behind an unfinished one (the reorder depth)."""
        return len(self._order)
