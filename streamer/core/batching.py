"""Micro-batching: when a batch closes, decided purely from the items and ``now``.

A ``Batcher`` collects items in arrival order and closes a batch when it holds ``max_size`` items (on ``add``)
or when ``max_wait_s`` has passed since its first item (on ``poll``). Invariants, property-tested:
no batch exceeds ``max_size``; concatenating the batches gives back the items in input order; no item is held
past ``first item time + max_wait_s`` by a caller that polls at ``next_deadline()``. The shell decides when to
call ``poll`` (it sleeps until ``next_deadline()``); the batcher never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_size: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {self.max_wait_s}")


class Batcher(Generic[T]):
    __slots__ = ("_deadline", "_items", "policy")

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._items: list[T] = []
        self._deadline: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> list[T] | None:
        """Add one item; returns the closed batch when it reached ``max_size``."""
        if not self._items:
            self._deadline = now + self.policy.max_wait_s
        self._items.append(item)
        if len(self._items) >= self.policy.max_size:
            return self._close()
        return None

    def poll(self, now: float) -> list[T] | None:
        """Returns the open batch if its deadline has come, else None."""
        if self._deadline is not None and now >= self._deadline:
            return self._close()
        return None

    def next_deadline(self) -> float | None:
        """When the open batch must close; None when empty."""
        return self._deadline

    def flush(self) -> list[T] | None:
        """Close whatever is open (shutdown, revocation)."""
        return self._close() if self._items else None

    def _close(self) -> list[T]:
        items, self._items, self._deadline = self._items, [], None
        return items
