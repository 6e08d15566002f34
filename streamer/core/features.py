"""Requests + model card -> one float32 feature matrix per model, a whole batch at a time.

The card fixes the column order (``card.features``). A JSON request contributes one row from its
``features`` object; an Open Inference Protocol v2 request contributes all the rows of its tensors, given
either as one [rows, n_features] tensor or as one [rows] tensor per feature name. Feature names the card does
not list are ignored, so clients may send a superset.

Per value: a number is used as is; ``null`` becomes NaN when the card sets ``allow_missing`` and is
``non-finite`` otherwise; a string is the index of its category for a feature the card declares categorical
(an unseen category is treated like a missing value) and ``schema`` otherwise; an absent feature is ``schema``;
a number float32 can't hold (|x| > 3.4e38) is ``non-finite``. A bad request is reported with its position and
never fails its batch-mates: the matrix holds only the accepted rows, and ``spans`` says which rows belong to
which request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.core.cards import ModelCard
from streamer.core.errors import NON_FINITE, SCHEMA, DecodeError
from streamer.core.types import RequestBody, Tensor

_MISSING = object()


@dataclass(frozen=True, slots=True)
class RowSpan:
    """Request at ``position`` (in the batch given to ``build_matrix``) owns matrix rows [start, stop)."""

    position: int
    start: int
    stop: int


@dataclass(slots=True)
class FeatureBatch:
    matrix: np.ndarray
    spans: list[RowSpan] = field(default_factory=list)
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)


def _slow_row(card: ModelCard, row: list[object]) -> list[float]:
    """The per-value rules, for the rare row that is not all plain numbers."""
    out: list[float] = []
    for name, value in zip(card.features, row, strict=True):
        if type(value) is float:
            out.append(value)
        elif value is _MISSING:
            raise DecodeError(SCHEMA, f"feature {name!r} is missing (model {card.ref})")
        elif value is None:
            if not card.allow_missing:
                raise DecodeError(NON_FINITE, f"feature {name!r} is null and model {card.ref} takes no missing values")
            out.append(float("nan"))
        elif isinstance(value, str):
            categories = card.categorical.get(name)
            if categories is None:
                raise DecodeError(SCHEMA, f"feature {name!r} is a string but not categorical in model {card.ref}")
            try:
                out.append(float(categories.index(value)))
            except ValueError:
                if not card.allow_missing:
                    raise DecodeError(
                        SCHEMA, f"feature {name!r} has unknown category {value!r} (model {card.ref})"
                    ) from None
                out.append(float("nan"))
        else:
            raise DecodeError(SCHEMA, f"feature {name!r} has type {type(value).__name__}")
    return out


def _tensor_rows(card: ModelCard, tensors: tuple[Tensor, ...]) -> np.ndarray:
    width = len(card.features)
    if len(tensors) == 1 and tensors[0].name not in card.features:
        tensor = tensors[0]
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


def build_matrix(card: ModelCard, bodies: Sequence[RequestBody]) -> FeatureBatch:
    """Build the float32 matrix of every acceptable request in ``bodies`` for ``card``'s model."""
    names = card.features
    width = len(names)
    blocks: list[np.ndarray] = []
    plain_rows: list[list[float]] = []
    spans: list[RowSpan] = []
    errors: list[tuple[int, DecodeError]] = []
    row = 0
    for position, body in enumerate(bodies):
        try:
            if body.features is not None:
                features = body.features
                values = [features.get(name, _MISSING) for name in names]
                if not all(type(v) is float for v in values):
                    values = _slow_row(card, values)
                plain_rows.append(values)  # type: ignore[arg-type]
                block_rows = 1
            else:
                assert body.tensors is not None
                block = _tensor_rows(card, body.tensors)
                if plain_rows:
                    blocks.append(np.asarray(plain_rows, dtype=np.float64))
                    plain_rows = []
                blocks.append(block)
                block_rows = block.shape[0]
        except DecodeError as exc:
            errors.append((position, exc))
            continue
        spans.append(RowSpan(position, row, row + block_rows))
        row += block_rows
    if plain_rows:
        blocks.append(np.asarray(plain_rows, dtype=np.float64))
    if not blocks:
        return FeatureBatch(np.empty((0, width), dtype=np.float32), spans, errors)
    with np.errstate(over="ignore"):  # overflow to inf is detected right below, per request
        matrix = (np.concatenate(blocks) if len(blocks) > 1 else blocks[0]).astype(np.float32)
    overflow = np.isinf(matrix).any(axis=1)
    if overflow.any():
        matrix, spans = _drop_overflowing(card, matrix, spans, overflow, errors)
    return FeatureBatch(matrix, spans, errors)


def _drop_overflowing(
    card: ModelCard,
    matrix: np.ndarray,
    spans: list[RowSpan],
    overflow: np.ndarray,
    errors: list[tuple[int, DecodeError]],
) -> tuple[np.ndarray, list[RowSpan]]:
    """Remove the requests with a value float32 can't hold; renumber the rows of the others."""
    keep_rows: list[np.ndarray] = []
    kept: list[RowSpan] = []
    row = 0
    for span in spans:
        if overflow[span.start : span.stop].any():
            errors.append((span.position, DecodeError(NON_FINITE, f"a feature is beyond float32 range ({card.ref})")))
            continue
        keep_rows.append(np.arange(span.start, span.stop))
        kept.append(RowSpan(span.position, row, row + span.stop - span.start))
        row += span.stop - span.start
    errors.sort(key=lambda item: item[0])
    index = np.concatenate(keep_rows) if keep_rows else np.empty(0, dtype=np.int64)
    return matrix[index], kept
