"""A scored chunk of ``streamer batch`` as each sink takes it: open prediction bodies (JSONL, a topic), table
columns (CSV, Parquet), rejects, or messages for a topic -- every row a prediction or a reject, in input order.

Two kinds, one per scoring path (``offline``): ``ScoredLines`` (JSONL lines or topic messages, scored by the
worker's ``score_records``) and ``ScoredTable`` (CSV or Parquet rows, scored by ``score_columns``). Both build
their bodies with the envelope's bulk encoder and their table columns from the per-row fields of the model's
result (``outputs.table_columns``), never by reading predictions back: a field added to the declaration
reaches every format with no change here. A table gets one row per scored row (an OIP request's rows each).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamer.batch.arrow_tables import TableChunk
from streamer.batch.files import LinesChunk, PredictionColumns
from streamer.core import outputs
from streamer.core.columns import ScoredColumns
from streamer.core.scoring import ScoredBatch

# (open bodies, keys, timestamps, partition or None, source offsets, source topic): predictions for a topic.
Messages = tuple[list[bytes], list[bytes | None], list[int], int | None, list[int], str]


class ScoredChunk(Protocol):
    """A scored chunk as the sinks see it: every row a prediction or a reject, in input order."""

    rows: int
    predictions: int
    reasons: Counter[str]

    def bodies(self) -> list[bytes]: ...

    def columns(self) -> PredictionColumns: ...

    def rejects(self) -> list[dict[str, Any]]: ...

    def messages(self) -> Messages: ...


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


@dataclass(slots=True)
class _Part:
    """One model version's scored rows of a chunk: chunk row ``rows[k]`` holds table row k."""

    rows: np.ndarray
    ids: list[str] | None  # None: the chunk's (a table's ids, taken in C)
    model: str
    version: str
    fields: dict[str, Any]  # outputs.table_columns of the per-row fields


def _table(parts: list[_Part], where: Any, ids_of: Any = None) -> PredictionColumns:
    """The parts' rows in input order (a stable sort keeps an OIP request's rows in order) as table columns;
    ``where(rows)`` says where they came from, ``ids_of(rows)`` gives their ids (None: the parts' own)."""
    sizes = [len(part.rows) for part in parts]
    size = sum(sizes)
    rows = np.concatenate([part.rows for part in parts]) if parts else np.empty(0, dtype=np.int64)
    order = None if len(parts) <= 1 else np.argsort(rows, kind="stable")
    names = [f.name for f in outputs.TABLE_FIELDS if f.rows]
    fields: dict[str, Any] = {name: _concat([part.fields.get(name) for part in parts], sizes) for name in names}
    if ids_of is None:
        fields["id"] = _concat([part.ids for part in parts], sizes)
    fields["model"] = [part.model for part, n in zip(parts, sizes, strict=True) for _ in range(n)]
    fields["version"] = [part.version for part, n in zip(parts, sizes, strict=True) for _ in range(n)]
    if order is not None:
        fields = {name: _reorder(column, order) for name, column in fields.items()}
        rows = rows[order]
    if ids_of is not None:
        fields["id"] = ids_of(rows) if size else []
    return PredictionColumns(fields, where(rows), size)


def _concat(columns: Sequence[Any], sizes: Sequence[int]) -> Any:
    """One column of several parts: numpy when every part is, else a list (None: a part without the field)."""
    if not columns:
        return []
    if len(columns) == 1:
        return columns[0]
    if all(column is None for column in columns):
        return None
    if all(isinstance(column, np.ndarray) for column in columns):
        return np.concatenate(columns)
    joined: list[Any] = []
    for column, size in zip(columns, sizes, strict=True):
        if column is None:
            joined += [None] * size
        else:
            joined += column.tolist() if isinstance(column, np.ndarray) else list(column)
    return joined


def _reorder(column: Any, order: np.ndarray) -> Any:
    if column is None or isinstance(column, np.ndarray):
        return None if column is None else column[order]
    return [column[i] for i in order.tolist()]


@dataclass(slots=True)
class ScoredLines:
    """JSONL lines or topic messages, scored by ``score_records``."""

    chunk: LinesChunk
    scored: ScoredBatch
    rows: int = 0
    predictions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rows = len(self.chunk.records)
        self.predictions = self.rows - len(self.scored.errors)
        self.reasons = Counter(error.reason for error in self.scored.errors.values())

    def _answered(self) -> list[int]:
        bodies = self.scored.bodies
        if not self.scored.errors:
            return list(range(len(bodies)))
        return [row for row, body in enumerate(bodies) if body is not None]

    def bodies(self) -> list[bytes]:
        bodies = self.scored.bodies
        return bodies if not self.scored.errors else [b for b in bodies if b is not None]  # type: ignore[misc]

    def columns(self) -> PredictionColumns:
        """The predictions as table columns, a row per scored row, from the scoring summaries' columns."""
        parts = []
        for summary in self.scored.models:
            n = len(summary.score_rows)
            ids: list[str] = summary.ids
            if n != len(summary.rows):  # OIP requests: several scored rows each, their request's id
                owner = np.searchsorted(np.asarray(summary.rows, dtype=np.int64), summary.score_rows)
                ids = [summary.ids[k] for k in owner.tolist()]
            fields = outputs.table_columns(summary.row_fields(), n)
            card = summary.card
            parts.append(_Part(summary.score_rows, ids, card.name, str(card.version), fields))
        return _table(parts, self._where)

    def _where(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        records = self.chunk.records
        offsets = np.asarray(records.offsets, dtype=np.int64)[rows]
        if self.chunk.where == "line":
            return {"line": offsets + 1}
        return {"partition": np.full(len(offsets), records.partition, dtype=np.int64), "offset": offsets}

    def rejects(self) -> list[dict[str, Any]]:
        records = self.chunk.records
        entries = []
        for row in sorted(self.scored.errors):
            error = self.scored.errors[row]
            if self.chunk.where == "line":
                place: dict[str, Any] = {"line": records.offsets[row] + 1}
            else:
                place = {"partition": records.partition, "offset": records.offsets[row]}
                place["key"] = _text(records.keys[row])
            original = _text(records.values[row])
            entries.append({**place, "error": error.reason, "detail": error.detail, "original": original})
        return entries

    def messages(self) -> Messages:
        records = self.chunk.records
        rows = self._answered()
        if self.chunk.where == "offset":
            partition: int | None = records.partition
            timestamps = [records.timestamps_ms[row] for row in rows]
        else:  # a file's line has no timestamp: latency from when it was read
            partition, timestamps = None, [int(time.time() * 1000)] * len(rows)
        return (
            self.bodies(),
            [records.keys[row] for row in rows],
            timestamps,
            partition,
            [records.offsets[row] for row in rows],
            records.topic,
        )


@dataclass(slots=True)
class ScoredTable:
    """CSV or Parquet rows, scored by ``score_columns``."""

    chunk: TableChunk
    scored: ScoredColumns
    rows: int = 0
    predictions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rows = len(self.chunk)
        self.predictions = self.rows - len(self.scored.errors)
        self.reasons = Counter(error.reason for error in self.scored.errors.values())

    def _order(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The answered rows in input order, and the permutation from model-grouped order (None: already)."""
        models = self.scored.models
        if len(models) == 1:
            return models[0].rows, None
        rows = np.concatenate([m.rows for m in models]) if models else np.empty(0, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        return rows[order], order

    def bodies(self) -> list[bytes]:
        chunk = self.chunk
        bodies: list[bytes] = []
        for model in self.scored.models:
            card = model.card
            ids = chunk.ids.take(model.rows).to_pylist()
            offsets = (model.rows + chunk.first).tolist()
            columns = outputs.row_columns(model.result)
            bodies += outputs.encode_single_predictions(
                ids, card.name, str(card.version), columns, chunk.source, 0, offsets
            )
        _, order = self._order()
        return bodies if order is None else [bodies[i] for i in order.tolist()]

    def columns(self) -> PredictionColumns:
        parts = [
            _Part(
                model.rows,
                None,
                model.card.name,
                str(model.card.version),
                outputs.table_columns(outputs.result_fields(model.result), len(model.rows)),
            )
            for model in self.scored.models
        ]
        return _table(parts, lambda rows: {"row": rows + self.chunk.first + 1}, self.chunk.ids.take)

    def rejects(self) -> list[dict[str, Any]]:
        errors = self.scored.errors
        rows = sorted(errors)
        originals = self.chunk.originals(rows)
        first = self.chunk.first
        return [
            {"row": first + row + 1, "error": errors[row].reason, "detail": errors[row].detail, "original": text}
            for row, text in zip(rows, originals, strict=True)
        ]

    def messages(self) -> Messages:
        rows, _ = self._order()
        now = int(time.time() * 1000)
        offsets = (rows + self.chunk.first).tolist()
        return self.bodies(), [None] * len(rows), [now] * len(rows), None, offsets, self.chunk.source
