"""Feature derivations of a transform stage: log, log1p, clip, ratio, bucketise, one-hot, on whole columns.

A transform stage turns the batch's columns into new ones before a model reads them, so the derivation
lives in the graph (and runs identically online and in ``streamer batch``) instead of in every client.

Invariants (pinned by ``tests/property/test_transforms.py`` against naive per-row implementations):

- Every output is a float64 column of shape (rows,). Missing (NaN) in propagates to missing out, except
  ``one_hot``, where a missing or unknown value is a row of zeros.
- Out-of-domain input is missing, never an infinity made from a finite number: ``log`` of x <= 0 and
  ``log1p`` of x <= -1 (``log1p(-1)`` is ``log(0)``) are NaN; ``ratio`` by zero is NaN, or ``default``.
  Infinite inputs follow IEEE (``log(inf)`` is inf, ``clip`` bounds them).
- Ops run in order and may read earlier ops' outputs; ``apply`` returns the new columns only, in the order of
  ``outputs_of``. Every column name means one thing in an op list: outputs are unique (one-hot's expanded
  names included), and no op writes a column that it or an earlier op reads. So ``inputs_of`` (what the
  batch must provide) and ``outputs_of`` (what the stage adds) describe the stage completely.
- ``one_hot`` outputs are named ``<output>=<category>``; its input is a text column (object array of
  ``str``) or a number column holding category indices (0-based, into ``categories``, as ``core.features``
  encodes a categorical feature). Every other op needs number columns.

Running on a batch without a column the ops read, with a column of the wrong length or with text where a
number is needed raises a non-retriable ``ScoringError``; the graph is expected to refuse that at start.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core.errors import ConfigError, ScoringError

# kind -> (column keys, in input order; parameter keys). The TOML table of an op is `op`, `output`, these.
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": (("input",), ()),
    "log1p": (("input",), ()),
    "clip": (("input",), ("low", "high")),
    "ratio": (("numerator", "denominator"), ("default",)),
    "bucketise": (("input",), ("edges",)),
    "one_hot": (("input",), ("categories",)),
}


@dataclass(frozen=True, slots=True)
class Op:
    """One derivation. ``params`` is normalised by ``parse_ops``: clip ``low``/``high`` float or None,
    ratio ``default`` float or None, bucketise ``edges`` tuple of floats (strictly increasing, finite),
    one_hot ``categories`` tuple of distinct strs."""

    kind: str
    inputs: tuple[str, ...]
    output: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def produces(self) -> tuple[str, ...]:
        """The columns this op adds: ``output``, or ``output=category`` per category for one_hot."""
        if self.kind == "one_hot":
            return tuple(f"{self.output}={c}" for c in self.params["categories"])
        return (self.output,)


# ---------------------------------------------------------------------------------------------- parsing


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{where}: {key} must be a number")
    return float(value)


def _params(kind: str, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    if kind == "clip":
        low = _number(raw["low"], where, "low") if "low" in raw else None
        high = _number(raw["high"], where, "high") if "high" in raw else None
        if low is None and high is None:
            raise ConfigError(f"{where}: clip needs low, high or both")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{where}: low {low:g} is above high {high:g}")
        return {"low": low, "high": high}
    if kind == "ratio":
        return {"default": _number(raw["default"], where, "default") if "default" in raw else None}
    if kind == "bucketise":
        edges = raw.get("edges")
        if not isinstance(edges, list | tuple) or not edges:
            raise ConfigError(f"{where}: edges must be a non-empty list of numbers")
        values = tuple(_number(e, where, "every edge") for e in edges)
        if not all(math.isfinite(e) for e in values):
            raise ConfigError(f"{where}: edges must be finite")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ConfigError(f"{where}: edges must be strictly increasing")
        return {"edges": values}
    if kind == "one_hot":
        categories = raw.get("categories")
        if not isinstance(categories, list | tuple) or not categories:
            raise ConfigError(f"{where}: categories must be a non-empty list of strings")
        if not all(isinstance(c, str) for c in categories):
            raise ConfigError(f"{where}: categories must be strings")
        if len(set(categories)) != len(categories):
            raise ConfigError(f"{where}: categories has duplicates")
        return {"categories": tuple(categories)}
    return {}


def _op(raw: Any, index: int, where: str) -> Op:
    label = f"{where}: ops[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: must be a table {{ op, input, output, ... }}")
    output = raw.get("output")
    if isinstance(output, str) and output:
        label = f"{label} ({output!r})"
    kind = raw.get("op")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"{label}: op {kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(output, str) or not output:
        raise ConfigError(f"{label}: output must be a non-empty column name")
    column_keys, param_keys = KINDS[kind]
    unknown = sorted(set(raw) - {"op", "output", *column_keys, *param_keys})
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {', '.join(unknown)} for op {kind!r}")
    inputs: list[str] = []
    for key in column_keys:
        name = raw.get(key)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{label}: {key} must be a non-empty column name")
        inputs.append(name)
    return Op(kind, tuple(inputs), output, _params(kind, raw, label))


def parse_ops(items: Sequence[Mapping[str, Any]], where: str) -> tuple[Op, ...]:
    """Validate a transform stage's ``ops`` list; every error is one line, ``{where}: ops[i] ('output'): ...``."""
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"{where}: ops must be a non-empty list of {{ op, input, output }} tables")
    ops = tuple(_op(raw, i, where) for i, raw in enumerate(items))
    written: dict[str, int] = {}
    read: dict[str, int] = {}  # column -> first op reading it
    for i, op in enumerate(ops):
        for name in op.inputs:
            read.setdefault(name, i)
        for name in op.produces:
            label = f"{where}: ops[{i}] ({op.output!r})"
            if name in written:
                raise ConfigError(f"{label}: column {name!r} is already written by ops[{written[name]}]")
            if name in read:
                raise ConfigError(f"{label}: writes column {name!r}, which ops[{read[name]}] reads")
            written[name] = i
    return ops


def inputs_of(ops: Iterable[Op]) -> set[str]:
    """The columns the batch must provide: read by an op and not produced by an earlier one."""
    produced: set[str] = set()
    needed: set[str] = set()
    for op in ops:
        needed.update(name for name in op.inputs if name not in produced)
        produced.update(op.produces)
    return needed


def outputs_of(ops: Iterable[Op]) -> tuple[str, ...]:
    """The columns the ops add, in order (one-hot contributes ``<output>=<category>`` per category)."""
    return tuple(name for op in ops for name in op.produces)


# ---------------------------------------------------------------------------------------------- running


def _column(columns: Mapping[str, np.ndarray], name: str, rows: int, op: Op) -> np.ndarray:
    try:
        column = np.asarray(columns[name])
    except KeyError:
        raise ScoringError(f"transform {op.kind} -> {op.output!r}: no column {name!r} in the batch") from None
    if column.shape != (rows,):
        raise ScoringError(f"transform {op.kind} -> {op.output!r}: column {name!r} has shape {column.shape}")
    return column


def _numbers(column: np.ndarray, name: str, op: Op) -> np.ndarray:
    if column.dtype.kind not in "biuf":
        raise ScoringError(f"transform {op.kind} -> {op.output!r}: column {name!r} is {column.dtype}, not numbers")
    return column.astype(np.float64, copy=False)


def _one_hot(column: np.ndarray, categories: tuple[str, ...], rows: int, op: Op) -> np.ndarray:
    """(len(categories), rows) of 1.0/0.0; a row whose value is no known category is all zeros."""
    if column.dtype.kind in "US":
        column = column.astype(object)
    if column.dtype.kind == "O":
        lookup = {c: i for i, c in enumerate(categories)}
        index = np.fromiter(map(lookup.get, column, itertools.repeat(-1)), np.int64, rows)
    else:
        values = _numbers(column, op.inputs[0], op)
        known = (values >= 0) & (values < len(categories)) & (values == np.floor(values))  # NaN: all False
        index = np.where(known, values, -1).astype(np.int64)
    out = np.zeros((len(categories), rows), dtype=np.float64)
    valid = np.flatnonzero(index >= 0)
    out[index[valid], valid] = 1.0
    return out


def _run(op: Op, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
    if op.kind == "one_hot":
        return _one_hot(_column(columns, op.inputs[0], rows, op), op.params["categories"], rows, op)
    x = _numbers(_column(columns, op.inputs[0], rows, op), op.inputs[0], op)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op.kind == "log":
            return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
        if op.kind == "log1p":
            return np.where(x > -1, np.log1p(np.where(x > -1, x, 0.0)), np.nan)
        if op.kind == "clip":
            low, high = op.params["low"], op.params["high"]
            out = x.copy()  # never an alias of the input column
            if low is not None:
                np.maximum(out, low, out=out)  # maximum/minimum propagate NaN
            if high is not None:
                np.minimum(out, high, out=out)
            return out
        if op.kind == "ratio":
            denominator = _numbers(_column(columns, op.inputs[1], rows, op), op.inputs[1], op)
            default = op.params["default"]
            out = x / denominator
            zero = denominator == 0
            out[zero] = np.nan if default is None else default
            out[np.isnan(x) | np.isnan(denominator)] = np.nan  # missing wins over the default
            return out
        if op.kind == "bucketise":
            out = np.searchsorted(np.array(op.params["edges"]), x, side="right").astype(np.float64)
            out[np.isnan(x)] = np.nan
            return out
    raise ScoringError(f"transform: unknown op {op.kind!r} -> {op.output!r}")


class _Overlay(Mapping[str, np.ndarray]):
    """The batch's columns with the ops' outputs so far on top (no copy of the batch)."""

    def __init__(self, new: dict[str, np.ndarray], base: Mapping[str, np.ndarray]) -> None:
        self._new = new
        self._base = base

    def __getitem__(self, name: str) -> np.ndarray:
        return self._new[name] if name in self._new else self._base[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._base), **dict.fromkeys(self._new)})

    def __len__(self) -> int:
        return len(set(self._base) | set(self._new))


def apply(ops: Iterable[Op], columns: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Run the ops in order on a batch; returns only the new columns (each float64, shape (rows,)), in the
    order of ``outputs_of``. ``columns`` is not modified."""
    new: dict[str, np.ndarray] = {}
    view = _Overlay(new, columns)
    for op in ops:
        result = _run(op, view, rows)
        if op.kind == "one_hot":
            for name, values in zip(op.produces, result, strict=True):
                new[name] = values
        else:
            new[op.output] = result
    return new
