"""Decoded requests + model card -> one float32 feature matrix per model, a whole batch at a time.

The card fixes the column order (``card.features``). A JSON request contributes one row from its
``features`` object; an Open Inference Protocol v2 request contributes all the rows of its tensors, given
either as one [rows, n_features] tensor named like the card's ``input`` or as one [rows] tensor per feature
name. A lone tensor named neither is a ``schema`` error, never read as the matrix. Feature names the card does
not list are ignored, so clients may send a superset.

Per value: a number is used as is; anything else follows ``value_rules`` (a null, a string, an absent
feature, a number float32 can't hold), the rules that ``streamer batch``'s column path applies to table cells
too. A bad request is reported with its position and never fails its batch-mates.

The common batch -- JSON requests whose features are all numbers -- takes one C-level pass per feature: an
``itemgetter`` over the rows straight into the matrix's column, no Python object per row. Anything else falls back
to the per-value rules for the rows that need them.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core import value_rules
from streamer.core.cards import ModelCard
from streamer.core.errors import SCHEMA, DecodeError
from streamer.core.requests import feature_field
from streamer.core.types import Tensor

_MISSING = object()


@dataclass(slots=True)
class FeatureBatch:
    """The matrix of the accepted requests, in the order given.

    ``accepted[j]`` is the position (in the ``build_matrix`` input) of the j-th accepted request; it owns
    matrix rows ``[starts[j], starts[j + 1])``, or just row ``j`` when ``starts`` is None (every accepted
    request has one row: the common case, with no per-request bookkeeping).
    """

    matrix: np.ndarray
    accepted: list[int]
    starts: np.ndarray | None = None
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)

    def rows_of(self, j: int) -> tuple[int, int]:
        if self.starts is None:
            return j, j + 1
        return int(self.starts[j]), int(self.starts[j + 1])


def _slow_row(card: ModelCard, features: Mapping[str, Any]) -> list[float]:
    """The per-value rules (``value_rules``), for the rare row that is not all plain numbers."""
    out: list[float] = []
    for name in card.features:
        value = features.get(name, _MISSING)
        if type(value) is float:
            out.append(value)
            continue
        if value is _MISSING:
            raise value_rules.missing_feature(card, name)
        if value is None:
            decided = value_rules.missing_value(card, name)
        elif isinstance(value, str):
            decided = value_rules.text_value(card, name, value)
        else:
            raise DecodeError(SCHEMA, f"feature {name!r} has type {type(value).__name__}")
        if isinstance(decided, DecodeError):
            raise decided
        out.append(decided)
    return out


def tensor_rows(card: ModelCard, tensors: tuple[Tensor, ...]) -> np.ndarray:
    """The [rows, n_features] float64 block of an OIP request, or ``DecodeError(schema)``."""
    width = len(card.features)
    if len(tensors) == 1 and tensors[0].name not in card.features:
        tensor = tensors[0]
        if tensor.name != card.input:
            raise DecodeError(
                SCHEMA,
                f"input {tensor.name!r} is neither the model's input {card.input!r} nor one of its features "
                f"(model {card.ref})",
            )
        rows = 1 if len(tensor.shape) == 1 else tensor.shape[0]
        columns = tensor.shape[-1]
        if columns != width:
            raise DecodeError(SCHEMA, f"input {tensor.name!r} has {columns} columns; model {card.ref} takes {width}")
        return tensor.data.reshape(rows, width)
    by_name = {t.name: t for t in tensors}
    missing = [name for name in card.features if name not in by_name]
    if missing:
        raise DecodeError(SCHEMA, f"inputs lack feature(s) {', '.join(missing)} (model {card.ref})")
    columns = [by_name[name] for name in card.features]
    rows = columns[0].shape[0]
    for tensor in columns:
        if tensor.shape[0] != rows or tensor.data.size != rows:
            raise DecodeError(SCHEMA, f"input {tensor.name!r} has shape {list(tensor.shape)}; expected [{rows}]")
    return np.stack([t.data for t in columns], axis=1)


def _plain_rows(card: ModelCard, features: Sequence[Mapping[str, Any]], checked: bool) -> np.ndarray | None:
    """The fast path: every row has every feature as a float. None when any row needs the per-value rules.
    ``checked``: the decoder already guaranteed every value is a float (``requests.PlainRequest``).

    The matrix is filled a column at a time (one C-level pass of ``itemgetter`` per feature): no tuple, list or
    other Python object per row."""
    n = len(features)
    matrix = np.empty((len(card.features), n), dtype=np.float64)
    try:
        for index, name in enumerate(card.features):
            values = map(operator.itemgetter(name), features)
            if checked:
                matrix[index] = np.fromiter(values, dtype=np.float64, count=n)
                continue
            column = list(values)
            if set(map(type, column)) - {float}:
                return None
            matrix[index] = column
    except KeyError:
        return None
    return matrix.T


def _typed_rows(card: ModelCard, features: Sequence[Any]) -> np.ndarray:
    """The matrix of requests decoded by ``requests.typed_decoder(card.features)``: a column per field."""
    n = len(features)
    matrix = np.empty((len(card.features), n), dtype=np.float64)
    for k in range(len(card.features)):
        matrix[k] = np.fromiter(map(operator.attrgetter(feature_field(k)), features), dtype=np.float64, count=n)
    return matrix.T


def build_matrix(
    card: ModelCard,
    features: Sequence[Mapping[str, Any] | None] | Sequence[Any],
    tensors: Mapping[int, tuple[Tensor, ...]] | None = None,
    all_numbers: bool = False,
    typed: bool = False,
) -> FeatureBatch:
    """The float32 matrix of every acceptable request for ``card``'s model.

    ``features[i]`` is request i's features object, or None for an OIP request whose inputs are
    ``tensors[i]``. ``all_numbers``: every value is known to be a float (decoded as ``PlainRequest``).
    ``typed``: the features were decoded by ``requests.typed_decoder(card.features)`` (every request has every
    feature, as a number).
    """
    width = len(card.features)
    if typed:
        return _finish(card, _typed_rows(card, features), list(range(len(features))), None, [])
    if not tensors:
        plain = _plain_rows(card, features, all_numbers)  # type: ignore[arg-type]
        if plain is not None:
            return _finish(card, plain, list(range(len(features))), None, [])
    blocks: list[np.ndarray] = []
    row_counts: list[int] = []
    accepted: list[int] = []
    errors: list[tuple[int, DecodeError]] = []
    pending: list[list[float]] = []
    for position, row_features in enumerate(features):
        try:
            if row_features is not None:
                pending.append(_slow_row(card, row_features))
                row_counts.append(1)
            else:
                assert tensors is not None
                block = tensor_rows(card, tensors[position])
                if pending:
                    blocks.append(np.asarray(pending, dtype=np.float64).reshape(len(pending), width))
                    pending = []
                blocks.append(block)
                row_counts.append(block.shape[0])
        except DecodeError as exc:
            errors.append((position, exc))
            continue
        accepted.append(position)
    if pending:
        blocks.append(np.asarray(pending, dtype=np.float64).reshape(len(pending), width))
    matrix = np.concatenate(blocks) if blocks else np.empty((0, width), dtype=np.float64)
    starts = None if all(c == 1 for c in row_counts) else np.concatenate(([0], np.cumsum(row_counts)))
    return _finish(card, matrix, accepted, starts, errors)


def _finish(
    card: ModelCard,
    matrix64: np.ndarray,
    accepted: list[int],
    starts: np.ndarray | None,
    errors: list[tuple[int, DecodeError]],
) -> FeatureBatch:
    """Cast to float32; drop the requests with a value float32 can't hold (``non-finite``)."""
    with np.errstate(over="ignore"):  # overflow to inf is detected right below, per request
        matrix = matrix64.astype(np.float32, order="C")  # C order whatever the fill order: the model's input
    overflow = np.isinf(matrix).any(axis=1)
    if not overflow.any():
        return FeatureBatch(matrix, accepted, starts, errors)
    if starts is None:
        starts = np.arange(len(accepted) + 1)
    keep_rows: list[np.ndarray] = []
    kept: list[int] = []
    counts: list[int] = []
    for j, position in enumerate(accepted):
        start, stop = int(starts[j]), int(starts[j + 1])
        if overflow[start:stop].any():
            errors.append((position, value_rules.beyond_float32(card)))
            continue
        keep_rows.append(np.arange(start, stop))
        kept.append(position)
        counts.append(stop - start)
    errors.sort(key=lambda item: item[0])
    index = np.concatenate(keep_rows) if keep_rows else np.empty(0, dtype=np.int64)
    new_starts = None if all(c == 1 for c in counts) else np.concatenate(([0], np.cumsum(counts)))
    return FeatureBatch(matrix[index], kept, new_starts, errors)
