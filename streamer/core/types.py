"""Values that cross the worker: a run of consumed messages, where a message came from, a label, a message to send.

The hot path carries one partition's messages as ``Records``: parallel columns (offsets, keys, values,
timestamps, headers), never one Python object per message. The shell builds them from a consumer's chunk and
the core decodes, scores and encodes them a whole batch at a time. Everything here is plain data: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

Scalar = float | str | None
T = TypeVar("T")
Headers = list[tuple[str, bytes | None]]


@dataclass(slots=True)
class Records:
    """Consumed messages of one partition, in strictly increasing offset order, as parallel columns.

    Offsets need not be contiguous (transaction markers and compaction leave gaps). ``headers[i]`` is None or
    empty when message ``i`` has none, which is the common case. Column lengths are equal (``check``).
    """

    topic: str
    partition: int
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps_ms: list[int]
    headers: list[Headers | None]

    def __len__(self) -> int:
        return len(self.offsets)

    def check(self) -> None:
        """Raise ValueError unless the columns agree and the offsets strictly increase (for adapters' tests)."""
        n = len(self.offsets)
        if not len(self.keys) == len(self.values) == len(self.timestamps_ms) == len(self.headers) == n:
            raise ValueError("the columns of a Records have different lengths")
        if any(b <= a for a, b in zip(self.offsets, self.offsets[1:], strict=False)):
            raise ValueError("offsets of a Records must strictly increase")

    def slice(self, start: int, stop: int) -> Records:
        return Records(
            self.topic,
            self.partition,
            self.offsets[start:stop],
            self.keys[start:stop],
            self.values[start:stop],
            self.timestamps_ms[start:stop],
            self.headers[start:stop],
        )

    @classmethod
    def concat(cls, parts: Sequence[Records]) -> Records:
        """One Records of consecutive parts of the same partition (the first part is returned as is if alone)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        merged = cls(first.topic, first.partition, [], [], [], [], [])
        for part in parts:
            merged.offsets += part.offsets
            merged.keys += part.keys
            merged.values += part.values
            merged.timestamps_ms += part.timestamps_ms
            merged.headers += part.headers
        return merged

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        timestamps_ms: Sequence[int] | None = None,
        headers: Sequence[Headers | None] | None = None,
    ) -> Records:
        """Build from columns, the optional ones defaulting to no key, timestamp 0 and no headers (tests, files)."""
        n = len(offsets)
        return cls(
            topic,
            partition,
            list(offsets),
            list(keys) if keys is not None else [None] * n,
            list(values),
            list(timestamps_ms) if timestamps_ms is not None else [0] * n,
            list(headers) if headers is not None else [None] * n,
        )


def pick(column: list[T], positions: Sequence[int]) -> list[T]:
    """``column``'s items at ``positions`` (ascending, distinct, each within the column), in one C-level pass;
    the column itself, not a copy, when ``positions`` is every position -- the common batch, where every row is
    accepted. The result is read, never mutated."""
    if len(positions) == len(column):
        return column
    return list(map(column.__getitem__, positions))


@dataclass(frozen=True, slots=True)
class SourceRef:
    """The Kafka coordinates of a request: what a dead letter's headers point back to."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Tensor:
    """One Open Inference Protocol v2 input: a named tensor, data flattened row-major as float64."""

    name: str
    shape: tuple[int, ...]
    data: np.ndarray = field(compare=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Tensor)
            and (self.name, self.shape) == (other.name, other.shape)
            and np.array_equal(self.data, other.data, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Label:
    """A feedback value: the true label of the request ``id`` (contract section 4)."""

    id: str
    label: float
    model: str | None = None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to send to a topic, as the command-line producer and the synthetic traffic make it."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
