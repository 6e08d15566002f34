"""Values that cross the worker: where a message came from, what it asked, what came out.

All frozen; the shell builds them from Kafka messages and the core passes them around without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Scalar = float | str | None


@dataclass(frozen=True, slots=True)
class SourceRef:
    """The Kafka coordinates of a request: what predictions and dead letters point back to."""

    topic: str
    partition: int
    offset: int

    @property
    def default_id(self) -> str:
        """The request id when the client gave none (contract section 2)."""
        return f"{self.topic}:{self.partition}:{self.offset}"


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
class RequestBody:
    """A decoded request value. Exactly one of ``features`` (one row) or ``tensors`` (OIP v2, n rows) is set."""

    id: str | None
    model: str | None
    features: dict[str, Scalar] | None = None
    tensors: tuple[Tensor, ...] | None = None

    @property
    def is_oip(self) -> bool:
        return self.tensors is not None


@dataclass(frozen=True, slots=True)
class Label:
    """A feedback value: the true label of the request ``id`` (contract section 4)."""

    id: str
    label: float
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """One output message. For an OIP v2 request ``score`` and ``label`` are lists, one item per row."""

    id: str
    model: str
    version: str
    score: float | list[float]
    label: int | list[int] | None
    outputs: dict[str, Any]
    source: SourceRef
    latency_ms: float
    decision: str | list[str] | None = None
