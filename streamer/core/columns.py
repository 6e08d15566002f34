"""Tabular rows (CSV, Parquet) -> one float32 matrix per model version, a column at a time, with the stream's
dead-letter reasons.

A row of a table is the request ``{"id": <id>, "model": <model>, "features": {<feature columns>}}``
(``streamer batch``; a feature column is one some loaded card names): this module builds the matrix that
``features.build_matrix`` would build for those requests, and rejects the rows the stream would reject, with
the same reason, without materialising a request -- or any Python object -- per row. Per-row Python cost is
what limits offline throughput (encoding rows as JSON for ``score_records`` costs 7.0 µs a row against 1.2 µs
here, the model call included), so each rule below is one numpy pass over a column. Routing is the catalog's,
as in ``scoring``: a row has no Kafka key, so a canary split assigns it by its id.

What a cell is, and what the stream would say about it -- the per-value rules are ``value_rules``, the ones the
row path applies (the adapter that reads the file classifies the cells, ``Column.kinds``):

- a number is used as is; a number float64 cannot hold (``1e999`` in a CSV, ``inf`` in Parquet) is
  ``non-finite``, as the JSON decoder says of ``1e999``; one float32 cannot hold is ``non-finite`` (the
  features' rule);
- a missing cell (null, an empty CSV cell, NaN -- JSON has no NaN, a missing number is ``null``) is NaN for a
  card with ``allow_missing`` and ``non-finite`` otherwise;
- text is a category of a categorical feature (an unseen one is a missing value, then as above, or ``schema``)
  and ``schema`` for any other feature;
- a value of a type a request cannot hold (a boolean, a date) is ``schema``, as the JSON decoder says of
  ``true``;
- a feature column the table lacks is ``schema`` for every row routed to that model.

Decoder-level problems (numbers beyond float64, wrong types) come first, in the table's column order --
the order in which the JSON decoder meets them in ``features`` -- then the features' rules in the card's column
order, as ``features._slow_row`` applies them: a row with several problems gets the reason the stream would
give (a property test holds the two paths equal on random tables). Pure: numpy only, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.core import value_rules
from streamer.core.cards import ModelCard
from streamer.core.errors import SCORING_FAILED, UNKNOWN_MODEL, DecodeError, ScoringError
from streamer.core.graph.scoring_graph import GraphResult, Infer, ScoringGraph
from streamer.core.routing import Catalog

# Column.kinds codes.
NUMBER = 0  # values[i] is the number (NaN: missing, +-inf: out of float64 range)
MISSING = 1  # null / empty
TEXT = 2  # texts[i] is the cell's text
WRONG = 3  # a value of a type no request can hold (Column.type_name)


@dataclass(frozen=True, slots=True)
class Column:
    """One column's cells over the rows of a chunk.

    ``values``: float64, the number where the cell is one (anything, NaN by convention, elsewhere).
    ``kinds``: int8 per cell (the codes above), or None when every cell is a number: the common column, one
    array and nothing else. ``texts``: the text of each TEXT cell, by row. ``type_name``: what a WRONG cell is.
    """

    values: np.ndarray
    kinds: np.ndarray | None = None
    texts: Mapping[int, str] = field(default_factory=dict)
    type_name: str = ""


@dataclass(slots=True)
class ColumnMatrix:
    """The rows of one model version: ``matrix[k]`` is row ``accepted[k]``; ``errors`` maps a rejected row."""

    matrix: np.ndarray
    accepted: np.ndarray
    errors: dict[int, DecodeError] = field(default_factory=dict)


def _assign(errors: dict[int, DecodeError], rows: np.ndarray, error: DecodeError) -> None:
    """Give ``error`` to the ``rows`` that have none yet (the first problem of a row is its reason)."""
    for row in rows.tolist():
        errors.setdefault(row, error)


def decoder_errors(
    columns: Mapping[str, Column], order: Sequence[str], features: frozenset[str] | set[str]
) -> dict[int, DecodeError]:
    """Rows the JSON decoder would refuse, before any routing: a number out of float64 range (``non-finite``)
    or a value of the wrong type (``schema``) in a feature column, the first such cell in column order."""
    errors: dict[int, DecodeError] = {}
    for name in order:
        column = columns.get(name)
        if column is None or name not in features:
            continue
        kinds = column.kinds
        if kinds is not None and (kinds == WRONG).any():
            _assign(errors, np.flatnonzero(kinds == WRONG), value_rules.wrong_type(name, column.type_name))
        infinite = np.isinf(column.values)
        if kinds is not None:
            infinite &= kinds == NUMBER
        if infinite.any():
            _assign(errors, np.flatnonzero(infinite), value_rules.beyond_float64(name))
    return errors


def feature_matrix(card: ModelCard, rows: np.ndarray, columns: Mapping[str, Column], size: int) -> ColumnMatrix:
    """The matrix of ``rows`` (ascending indices into the columns, which hold ``size`` rows) for ``card``, and
    why the rejected rows are rejected. The rows have passed ``decoder_errors``."""
    everything = len(rows) == size
    errors: dict[int, DecodeError] = {}

    def take(array: np.ndarray) -> np.ndarray:
        return array if everything else array[rows]

    matrix64 = np.empty((len(rows), len(card.features)), dtype=np.float64)
    for index, name in enumerate(card.features):
        column = columns.get(name)
        if column is None:
            _assign(errors, rows, value_rules.missing_feature(card, name))
            matrix64[:, index] = np.nan
            continue
        values = take(column.values)
        kinds = take(column.kinds) if column.kinds is not None else None
        target = matrix64[:, index]
        target[:] = values
        missing = np.isnan(values)
        if kinds is not None:
            missing = (missing & (kinds == NUMBER)) | (kinds == MISSING)
            text = np.flatnonzero(kinds == TEXT)
            if len(text):
                _texts(card, name, column, rows, text, target, missing, errors)
        if missing.any():
            decided = value_rules.missing_value(card, name)
            if isinstance(decided, DecodeError):
                _assign(errors, rows[missing], decided)
            target[missing] = np.nan
    with np.errstate(over="ignore"):  # overflow to inf is detected right below, per row
        matrix = matrix64.astype(np.float32)
    overflow = np.isinf(matrix).any(axis=1)
    if overflow.any():
        _assign(errors, rows[overflow], value_rules.beyond_float32(card))
    if not errors:
        return ColumnMatrix(matrix, rows)
    bad = np.isin(rows, np.fromiter(errors, dtype=np.int64, count=len(errors)))
    return ColumnMatrix(matrix[~bad], rows[~bad], errors)


def _texts(
    card: ModelCard,
    name: str,
    column: Column,
    rows: np.ndarray,
    text: np.ndarray,
    target: np.ndarray,
    missing: np.ndarray,
    errors: dict[int, DecodeError],
) -> None:
    """TEXT cells (positions ``text`` within ``rows``): a category's index, a missing value (NaN), or an error --
    ``value_rules.text_value``, decided once per distinct text."""
    decided: dict[str, float | DecodeError] = {}
    for position in text.tolist():
        value = column.texts[int(rows[position])]
        outcome = decided.get(value)
        if outcome is None:
            outcome = decided[value] = value_rules.text_value(card, name, value)
        if isinstance(outcome, DecodeError):
            errors.setdefault(int(rows[position]), outcome)
        elif outcome != outcome:  # NaN: an unseen category taken as a missing value
            missing[position] = True
        else:
            target[position] = outcome


@dataclass(slots=True)
class ModelRows:
    """What one model version made of a chunk: ``result`` row k is the prediction of chunk row ``rows[k]``."""

    card: ModelCard
    rows: np.ndarray
    result: GraphResult


@dataclass(slots=True)
class ScoredColumns:
    """Per row of a chunk: a prediction (in exactly one of ``models``) or a dead letter (``errors``)."""

    models: list[ModelRows]
    errors: dict[int, DecodeError]
    error_models: dict[int, str] = field(default_factory=dict)


def score_columns(
    columns: Mapping[str, Column],
    order: Sequence[str],
    size: int,
    requested: Mapping[str | None, np.ndarray],
    catalog: Catalog,
    infer: Infer,
    ids: Callable[[np.ndarray], Sequence[str]],
    graph_for: Callable[[ModelCard], ScoringGraph] = ScoringGraph.single,
) -> ScoredColumns:
    """Decode, route, build and score a chunk of ``size`` rows.

    ``requested`` maps each model string (None: the default model) to its rows, ascending. A feature column is
    one that some loaded card names (the others are not part of the request). Routing is the catalog's
    (``Catalog.route``): a bare name is the champion, or the version a canary split gives the row's id (a row
    has no key; ``ids(rows)`` gives the ids, asked only then). A failed model run fails only its rows, as
    ``scoring-failed``, and so does a score that is not finite -- as in ``scoring.score_records``.
    """
    features = {name for versions in catalog.cards.values() for card in versions.values() for name in card.features}
    scored = ScoredColumns([], decoder_errors(columns, order, features))
    refused = np.fromiter(scored.errors, dtype=np.int64, count=len(scored.errors)) if scored.errors else None
    by_version: dict[str, tuple[ModelCard, list[np.ndarray]]] = {}
    for name, rows in requested.items():
        if refused is not None:
            rows = rows[~np.isin(rows, refused)]
        if not len(rows):
            continue
        try:
            route = catalog.route(name)
        except DecodeError as exc:
            _assign(scored.errors, rows, exc)
            continue
        if isinstance(route, ModelCard) and route.ref in catalog.graphs:
            detail = f"{route.ref} is a scoring graph: graphs score JSONL requests (a table row has no request key)"
            _assign(scored.errors, rows, DecodeError(UNKNOWN_MODEL, detail))
            continue
        if isinstance(route, ModelCard):
            by_version.setdefault(route.ref, (route, []))[1].append(rows)
            continue
        assigned = np.asarray(route.assign([None] * len(rows), ids(rows)), dtype=np.int64)
        for k, card in enumerate(route.cards):
            if (assigned == k).any():
                by_version.setdefault(card.ref, (card, []))[1].append(rows[assigned == k])
    for card, parts in by_version.values():
        rows = parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts))
        built = feature_matrix(card, rows, columns, size)
        for row, error in built.errors.items():
            scored.errors[row] = error
            scored.error_models[row] = card.ref
        if not len(built.accepted):
            continue
        _run(card, built, graph_for(card), infer, scored)
    return scored


def _run(card: ModelCard, built: ColumnMatrix, graph: ScoringGraph, infer: Infer, scored: ScoredColumns) -> None:
    try:
        result = graph.run(built.matrix, infer)
    except ScoringError as exc:
        _fail(scored, built.accepted, DecodeError(SCORING_FAILED, exc.detail), card)
        return
    accepted = built.accepted
    finite = np.isfinite(result.score)
    if not finite.all():
        _fail(scored, accepted[~finite], DecodeError(SCORING_FAILED, f"{card.ref} returned a non-finite score"), card)
        result = GraphResult(
            result.score[finite],
            result.label[finite] if result.label is not None else None,
            {key: value[finite] for key, value in result.outputs.items()},
        )
        accepted = accepted[finite]
    scored.models.append(ModelRows(card, accepted, result))


def _fail(scored: ScoredColumns, rows: np.ndarray, error: DecodeError, card: ModelCard) -> None:
    for row in rows.tolist():
        scored.errors[row] = error
        scored.error_models[row] = card.ref
