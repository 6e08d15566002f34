"""The row path and the column path give every row one outcome, on random tables.

A table row means the request ``{"id", "model", "features": {...}}``. Each example draws a table -- numbers
(some beyond float32), numbers beyond float64, nulls, categories known and unknown, other text, booleans, a
feature column missing altogether -- and two cards (one strict, one with ``allow_missing`` and a categorical
feature), and requires ``core.columns.score_columns`` (the cells as ``Column`` arrays) and
``core.scoring.score_records`` (the same rows as JSON requests, through the request decoder and
``features.build_matrix``) to agree row by row: the same dead-letter reason, the same detail wherever the
value rules (``core.value_rules``) decided, and otherwise the same score from the same float32 matrix.
Pure: no files, no model runtime (the integration test ``test_batch_equivalence`` does the same through
CSV/Parquet files and ONNX Runtime).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.columns import MISSING, NUMBER, TEXT, WRONG, Column, score_columns
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records

FEATURES = ("a", "b", "c")
WEIGHTS = np.array([1.0, 10.0, 100.0])
STRICT = ModelCard("strict", 1, "regression", FEATURES, "x", "0" * 64, OutputRef("y"), None)
LAX = ModelCard(
    "lax", 1, "regression", FEATURES, "x", "0" * 64, OutputRef("y"), None, {"b": ("night", "day")}, allow_missing=True
)
CATALOG = Catalog({"strict": {1: STRICT}, "lax": {1: LAX}}, "strict")


def infer(card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
    """A weighted sum that tells the columns apart and takes missing values (NaN) as 0."""
    return {"y": np.nan_to_num(matrix.astype(np.float64)) @ WEIGHTS}


cells = st.one_of(
    st.tuples(st.just("number"), st.floats(allow_nan=False, allow_infinity=False)),
    st.tuples(st.just("number"), st.sampled_from([3.5e38, -1e39, 1e300, 0.0, -0.0])),
    st.tuples(st.just("beyond-float64")),
    st.tuples(st.just("null")),
    st.tuples(st.just("text"), st.sampled_from(["night", "day", "dusk", ""]) | st.text(max_size=4)),
    st.tuples(st.just("bool"), st.booleans()),
)


def _json(cell: tuple[Any, ...]) -> str:
    kind = cell[0]
    if kind == "number":
        return repr(cell[1])
    if kind == "beyond-float64":
        return "1e999"
    if kind == "null":
        return "null"
    if kind == "bool":
        return "true" if cell[1] else "false"
    return json.dumps(cell[1])


def _column(column_cells: list[tuple[Any, ...]]) -> Column:
    values = np.full(len(column_cells), np.nan)
    kinds = np.empty(len(column_cells), dtype=np.int8)
    texts = {}
    for i, cell in enumerate(column_cells):
        kind = cell[0]
        if kind in ("number", "beyond-float64"):
            kinds[i], values[i] = NUMBER, cell[1] if kind == "number" else np.inf
        elif kind == "null":
            kinds[i] = MISSING
        elif kind == "text":
            kinds[i], texts[i] = TEXT, cell[1]
        else:
            kinds[i] = WRONG
    every_number = (kinds == NUMBER).all()
    return Column(values, None if every_number else kinds, texts, "bool")


@st.composite
def tables(draw: Any) -> tuple[list[str], list[str | None], dict[str, list[tuple[Any, ...]]]]:
    rows = draw(st.integers(1, 12))
    present = draw(st.lists(st.sampled_from(FEATURES), min_size=2, max_size=3, unique=True))
    columns = {name: draw(st.lists(cells, min_size=rows, max_size=rows)) for name in present}
    models = draw(st.lists(st.sampled_from(["strict", "lax", None]), min_size=rows, max_size=rows))
    return present, models, columns


@given(tables())
def test_the_row_and_column_paths_give_each_row_one_outcome(table: Any) -> None:
    order, models, cells_by_column = table
    size = len(models)
    requests = []
    for i in range(size):
        features = ", ".join(f'"{name}": {_json(cells_by_column[name][i])}' for name in order)
        model = "" if models[i] is None else f', "model": "{models[i]}"'
        requests.append(f'{{"id": "r{i}"{model}, "features": {{{features}}}}}'.encode())
    stream = score_records(Records.of("t", 0, range(size), requests), CATALOG, infer)

    columns = {name: _column(cells_by_column[name]) for name in order}
    requested: dict[str | None, np.ndarray] = {}
    for i, model in enumerate(models):
        requested.setdefault(model, []).append(i)  # type: ignore[arg-type]
    requested = {model: np.asarray(rows, dtype=np.int64) for model, rows in requested.items()}
    ids = lambda rows: [f"r{i}" for i in rows]  # noqa: E731
    table_scored = score_columns(columns, order, size, requested, CATALOG, infer, ids)
    scores = {
        int(row): float(score) for m in table_scored.models for row, score in zip(m.rows, m.result.score, strict=True)
    }

    for i in range(size):
        decoder_level = any(cells_by_column[name][i][0] in ("bool", "beyond-float64") for name in order)
        if i in stream.errors:
            error, other = stream.errors[i], table_scored.errors.get(i)
            assert other is not None, (i, error, scores.get(i))
            assert other.reason == error.reason, (i, error, other)
            if not decoder_level:  # the value rules decided: one sentence, whichever way the row came
                assert other.detail == error.detail
        else:
            assert i not in table_scored.errors, (i, table_scored.errors[i])
            assert scores[i] == json.loads(stream.bodies[i] + b"}")["score"]
