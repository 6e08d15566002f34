"""Request id -> waiting caller: the matching half of ``streamer.client``, without Kafka, threads or futures.

A *waiter* is one call (``score`` or ``score_many``): the ids it sent, one result slot per id, and how many
slots are still empty. The router maps every id in flight to ``(waiter, slot)``. The client's one consumer
thread reads each answer's id (a prediction's ``id``, or the ``id`` inside a dead letter's value, which is the
request's own bytes) and ``claim``s it; the slot is filled and, when it was the waiter's last, the waiter is
returned as complete, so that the client wakes it (a future for a blocking call, one
``loop.call_soon_threadsafe`` per event loop and batch of answers for asyncio calls).

Invariants:
- an id is in flight at most once (``add`` refuses a duplicate: the answer could not be told apart);
- a slot is filled at most once: a claim removes the id, so a second answer with the same id (another
  client's request that reused it) is not routed;
- once its delivery report said where a request was written, an answer whose ``streamer-source-*`` headers
  name another place is someone else's (an id collision with another producer) and is not taken;
- an answer whose id cannot be read (a dead letter whose value was cut to fit the dead-letter topic, or is not
  JSON) is matched by its source coordinates, known from the delivery report;
- ``drop`` (a timeout or a cancelled call) forgets every id the waiter still waits for; a late answer for
  them is then ignored like any other stranger's.

Not thread-safe on its own: the client holds one lock around each call (once per batch of answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Source = tuple[str, int, int]  # (topic, partition, offset) of a request


class Waiter:
    """One call's ids and result slots. ``context`` is the client's (a future, an event loop)."""

    __slots__ = ("context", "error", "ids", "remaining", "results", "sources")

    def __init__(self, ids: Sequence[str], context: Any = None) -> None:
        self.ids = list(ids)
        self.results: list[Any] = [None] * len(self.ids)
        self.sources: list[Source | None] = [None] * len(self.ids)
        self.remaining = len(self.ids)
        self.context = context
        self.error: BaseException | None = None  # set when the whole call failed (closed client)

    @property
    def done(self) -> bool:
        return self.remaining == 0 or self.error is not None

    def missing(self) -> list[str]:
        """The ids still without an answer."""
        return [i for i, r in zip(self.ids, self.results, strict=True) if r is None]


class Router:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[Waiter, int]] = {}
        self._by_source: dict[Source, str] = {}

    def __len__(self) -> int:
        """Requests in flight."""
        return len(self._pending)

    def __contains__(self, ident: str) -> bool:
        """Whether an answer with this id is awaited (the cheap test before anything else is read)."""
        return ident in self._pending

    def add(self, waiter: Waiter) -> None:
        """Register every id of ``waiter``; ``ValueError`` (and nothing registered) on an id already in flight."""
        pending = self._pending
        fresh = set(waiter.ids)
        if len(fresh) != len(waiter.ids) or not fresh.isdisjoint(pending):
            duplicates = sorted({i for i in waiter.ids if i in pending or waiter.ids.count(i) > 1})
            raise ValueError(f"request id(s) already in flight: {', '.join(duplicates[:5])}")
        for slot, ident in enumerate(waiter.ids):
            pending[ident] = (waiter, slot)

    def delivered(self, waiter: Waiter, slot: int, source: Source) -> None:
        """The delivery report of ``waiter``'s request ``slot``: where it was written."""
        if waiter.results[slot] is None and self._pending.get(waiter.ids[slot]) == (waiter, slot):
            waiter.sources[slot] = source
            self._by_source[source] = waiter.ids[slot]

    def claim(self, ident: str | None, source: Source | None) -> tuple[Waiter, int] | None:
        """The waiter and slot an answer belongs to (and the id is no longer in flight), or None: not ours.

        ``ident``: the id read from the answer (None when unreadable); ``source``: its ``streamer-source-*``
        headers (None when absent)."""
        if ident is None:
            if source is None:
                return None
            ident = self._by_source.get(source)
            if ident is None:
                return None
        entry = self._pending.get(ident)
        if entry is None:
            return None
        waiter, slot = entry
        known = waiter.sources[slot]
        if known is not None and source is not None and known != source:
            return None  # the same id, another request: someone else's
        del self._pending[ident]
        if known is not None:
            self._by_source.pop(known, None)
        return entry

    def fill(self, waiter: Waiter, slot: int, result: Any) -> bool:
        """Put ``result`` in its slot; True when that completes the waiter."""
        if waiter.results[slot] is not None or waiter.error is not None:
            return False
        waiter.results[slot] = result
        waiter.remaining -= 1
        return waiter.remaining == 0

    def settle(self, waiter: Waiter, slot: int, result: Any) -> bool:
        """Fill a slot from outside the answer path (a failed delivery): forget the id, then ``fill``."""
        ident = waiter.ids[slot]
        if self._pending.get(ident) == (waiter, slot):
            del self._pending[ident]
            source = waiter.sources[slot]
            if source is not None:
                self._by_source.pop(source, None)
            return self.fill(waiter, slot, result)
        return False

    def drop(self, waiter: Waiter) -> None:
        """Forget every id ``waiter`` still waits for (timeout, cancellation)."""
        for slot, ident in enumerate(waiter.ids):
            if self._pending.get(ident) == (waiter, slot):
                del self._pending[ident]
                source = waiter.sources[slot]
                if source is not None:
                    self._by_source.pop(source, None)

    def fail_all(self, error: BaseException) -> list[Waiter]:
        """Every waiter still in flight, failed with ``error`` and forgotten (the client closes)."""
        waiters = {id(w): w for w, _ in self._pending.values()}
        self._pending.clear()
        self._by_source.clear()
        for waiter in waiters.values():
            waiter.error = error
        return list(waiters.values())
