"""The rows an import measures on: a reference or holdout file (CSV or Parquet) as columns, then as the feature
matrix a given card would get.

A file is read by ``streamer batch``'s reader (``batch.files.read_table``: CSV cells that parse as numbers are
numbers, Parquet keeps its types) and its feature matrix is built by the stream's own rules
(``core.columns.feature_matrix``: missing values, categories, float32 range), so that the rows a version is
measured on are exactly what serving would feed it. A row serving would reject (a missing value for a card
without ``allow_missing``, text in a number column) is left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.batch import files
from streamer.core.cards import ModelCard
from streamer.core.columns import NUMBER, Column, decoder_errors, feature_matrix
from streamer.core.errors import BatchFileError, ImportRefused

_CHUNK_ROWS = 65_536


@dataclass(frozen=True, slots=True)
class Table:
    """A whole file as columns (``core.columns.Column``), in the file's column order."""

    path: Path
    columns: dict[str, Column]
    names: tuple[str, ...]
    rows: int


def _concat(parts: list[Column], sizes: list[int]) -> Column:
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([p.values for p in parts])
    kinds = None
    if any(p.kinds is not None for p in parts):
        kinds = np.concatenate(
            [p.kinds if p.kinds is not None else np.full(n, NUMBER, np.int8) for p, n in zip(parts, sizes, strict=True)]
        )
    texts: dict[int, str] = {}
    offset = 0
    for part, size in zip(parts, sizes, strict=True):
        texts.update({offset + row: text for row, text in part.texts.items()})
        offset += size
    type_name = next((p.type_name for p in parts if p.type_name), "")
    return Column(values, kinds, texts, type_name)


def read_table(path: Path, what: str) -> Table:
    """A CSV or Parquet file as columns; ``what`` (``--holdout``, ``--reference``) names it in errors."""
    if not path.is_file():
        raise ImportRefused(f"{what} {path}: no such file")
    fmt = files.format_of(path, None, default="csv")
    if fmt not in ("csv", "parquet"):
        raise ImportRefused(f"{what} {path}: a table is CSV or Parquet, not {fmt}")
    chunks: dict[str, list[Column]] = {}
    sizes: list[int] = []
    names: tuple[str, ...] = ()
    try:
        for chunk in files.read_table(path, fmt, _CHUNK_ROWS, None):
            names = tuple(chunk.batch.schema.names)
            sizes.append(len(chunk))
            for name, column in chunk.columns.items():
                chunks.setdefault(name, []).append(column)
    except BatchFileError as exc:
        raise ImportRefused(f"{what}: {exc}") from None
    rows = sum(sizes)
    if rows == 0:
        raise ImportRefused(f"{what} {path} has no rows")
    columns = {name: _concat(parts, sizes) for name, parts in chunks.items()}
    return Table(path, columns, names, rows)


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows of a table as one card's float32 matrix: ``matrix[k]`` is file row ``rows[k]`` (0-based)."""

    matrix: np.ndarray
    rows: np.ndarray
    rejected: int


def rows_for(card: ModelCard, table: Table, rows: np.ndarray | None = None, what: str = "") -> Rows:
    """The feature matrix of ``rows`` (default: all) for ``card``; ImportRefused naming the missing columns
    when the table lacks features the card needs."""
    missing = [f for f in card.features if f not in table.columns]
    if missing:
        raise ImportRefused(f"{what or table.path} has no column for the feature(s) {', '.join(missing)} of {card.ref}")
    chosen = np.arange(table.rows, dtype=np.int64) if rows is None else rows
    errors = decoder_errors(table.columns, list(table.names), set(card.features))
    if errors:
        chosen = chosen[~np.isin(chosen, np.fromiter(errors, dtype=np.int64, count=len(errors)))]
    built = feature_matrix(card, chosen, table.columns, table.rows)
    asked = table.rows if rows is None else len(rows)
    return Rows(built.matrix, built.accepted, asked - len(built.accepted))


def label_values(table: Table, column: str, rows: np.ndarray) -> np.ndarray:
    """The label column's numbers for ``rows``; ImportRefused when it is absent or not all numbers."""
    found = table.columns.get(column)
    if found is None:
        raise ImportRefused(f"{table.path} has no label column {column!r} (columns: {', '.join(table.names)})")
    values = found.values[rows]
    numbers = found.kinds[rows] == NUMBER if found.kinds is not None else np.ones(len(rows), bool)
    if not numbers.all() or not np.isfinite(values).all():
        bad = int(rows[np.flatnonzero(~(numbers & np.isfinite(values)))[0]])
        raise ImportRefused(f"{table.path}: label column {column!r} is not a number on row {bad + 1}")
    return values
