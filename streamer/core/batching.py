"""Micro-batching of one partition's records: when a batch closes, decided purely from the records and ``now``.

A ``Batcher`` collects consecutive ``Records`` of one partition and closes a batch when it holds ``max_size``
rows (on ``add``, which cuts a large chunk into as many full batches as it holds), when ``max_wait_s`` has
passed since its first row (on ``poll``), or -- with ``close_when_drained`` -- as soon as the shell reports that
its consumer has nothing more buffered (``poll(now, drained=True)``): under light load a request does not wait
for batch-mates that are not coming, and under a backlog, when the consumer returns full chunks, batches fill
to ``max_size``. ``max_wait_s`` stays the upper bound either way.

Invariants, property-tested: no batch exceeds ``max_size``; concatenating the batches gives back the rows in
input order; no row is held past ``first row time + max_wait_s`` by a caller that polls at
``next_deadline()``; a drained poll leaves nothing open. The shell decides when to call ``poll`` (it sleeps
until ``next_deadline()``); the batcher never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.core.types import Records


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_size: int
    max_wait_s: float
    close_when_drained: bool = True

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {self.max_wait_s}")


class Batcher:
    __slots__ = ("_deadline", "_open", "_opened_at", "_size", "policy")

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._open: list[Records] = []
        self._size = 0
        self._deadline: float | None = None
        self._opened_at = 0.0

    def __len__(self) -> int:
        """Rows in the open batch."""
        return self._size

    @property
    def opened_at(self) -> float:
        """When the open batch got its first row (meaningless while empty)."""
        return self._opened_at

    def add(self, records: Records, now: float) -> list[Records]:
        """Add consecutive records; returns the batches that reached ``max_size``, oldest first."""
        closed: list[Records] = []
        max_size = self.policy.max_size
        start, total = 0, len(records)
        while start < total:
            if self._size == 0:
                self._deadline = now + self.policy.max_wait_s
                self._opened_at = now
            take = min(max_size - self._size, total - start)
            self._open.append(records if take == total else records.slice(start, start + take))
            self._size += take
            start += take
            if self._size >= max_size:
                closed.append(self._close())
        return closed

    def poll(self, now: float, drained: bool = False) -> Records | None:
        """The open batch if its deadline has come (or the consumer is drained and the policy says so)."""
        if self._deadline is None:
            return None
        if now >= self._deadline or (drained and self.policy.close_when_drained):
            return self._close()
        return None

    def next_deadline(self) -> float | None:
        """When the open batch must close; None when empty."""
        return self._deadline

    def flush(self) -> Records | None:
        """Close whatever is open (shutdown, revocation)."""
        return self._close() if self._size else None

    def _close(self) -> Records:
        batch = Records.concat(self._open)
        self._open, self._size, self._deadline = [], 0, None
        return batch
