"""The proof that a converted (ONNX) model answers like its source model, and the likely cause when it does not.

Both models score the same float32 rows (the source gets them widened to float64, so that the only difference
left is the conversion). The rule, per task:

- a classifier: every class probability within ``PROBABILITY_TOLERANCE`` (1e-5) absolute, and the same
  predicted label on every row whose source probabilities are decisive (the two highest more than twice the
  tolerance apart; a tie may fall either way);
- a regressor: every value within ``REGRESSION_TOLERANCE`` (1e-5) relative, that is
  ``|converted - source| <= 1e-5 * max(|source|, scale)`` where ``scale`` is the mean absolute source value
  (a floor, so that a value near zero is not judged against a zero denominator).

A refusal names the first rows and columns that differ (``Proof.describe``) and the likely cause, tried in
this order:

1. **class order**: some other order of the converted probability columns matches the source;
2. **float32 split thresholds**: on a differing row, a feature value lies between one of the source's float64
   split thresholds ``t`` and its float32 rounding, so ``x <= t`` and ``x <= float32(t)`` disagree (ONNX tree
   ensembles compare in float32); the caller gives the thresholds per feature (``thresholds``);
3. **labels**: probabilities agree, labels do not (the label output maps classes differently);
4. otherwise unknown: a pipeline step converted differently, or columns in another order.

Pure: numpy and the stdlib only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PROBABILITY_TOLERANCE = 1e-5
REGRESSION_TOLERANCE = 1e-5
_SHOWN = 3  # differences named in a refusal
_MAX_PERMUTED_CLASSES = 6  # every order of up to 6 classes is tried (720); above, the reversed order only


@dataclass(frozen=True, slots=True)
class Difference:
    row: int  # index into the proof rows
    column: int | None  # the probability column (class index); None for a regressor's value or a label
    source: float
    converted: float
    what: str = "probability"  # "probability", "value" or "label"


@dataclass(frozen=True, slots=True)
class Proof:
    """The comparison on ``rows`` rows. ``max_difference`` is absolute for probabilities, relative for values."""

    rows: int
    measure: str  # "absolute" or "relative"
    tolerance: float
    max_difference: float
    differing_rows: int
    differences: tuple[Difference, ...] = ()
    cause: str | None = None
    cause_row: int | None = None  # the proof row the cause names, as ``{row}`` in ``cause``

    @property
    def equal(self) -> bool:
        return self.rows > 0 and self.differing_rows == 0

    def figures(self) -> dict[str, float | int | str]:
        return {
            "rows": self.rows,
            "max_difference": float(f"{self.max_difference:.3g}"),
            "tolerance": self.tolerance,
            "measure": self.measure,
        }

    def describe(self, row_names: Sequence[str], classes: Sequence[object] = ()) -> str:
        """One line: how many rows differ, the first few (rows and columns, both values), the likely cause."""
        if self.rows == 0:
            return "no row to compare the converted model with its source"
        shown = []
        for d in self.differences:
            column = ""
            if d.column is not None:
                label = classes[d.column] if d.column < len(classes) else d.column
                column = f" column {d.column} (class {label})"
            shown.append(f"{row_names[d.row]}{column}: {d.what} {d.source:.9g} (source) vs {d.converted:.9g} (onnx)")
        cause = self.cause or "unknown (a pipeline step converted differently, or columns in another order?)"
        if self.cause_row is not None:
            cause = cause.replace("{row}", row_names[self.cause_row])
        return (
            f"{self.differing_rows} of {self.rows} rows differ beyond {self.tolerance:g} ({self.measure}); "
            f"first: {'; '.join(shown)}; likely cause: {cause}"
        )


def _first(rows: np.ndarray, build: Callable[[int], Difference]) -> tuple[Difference, ...]:
    return tuple(build(int(r)) for r in rows[:_SHOWN])


def threshold_crossings(
    matrix: np.ndarray, rows: np.ndarray, thresholds: Mapping[int, np.ndarray]
) -> list[tuple[int, int, float, float]]:
    """(row, feature, value, threshold) where the float64 threshold and its float32 rounding send the float32
    value to different sides (``x <= t`` against ``x <= float32(t)``), for the given rows."""
    found = []
    for feature, values in thresholds.items():
        t64 = np.asarray(values, dtype=np.float64)
        t64 = t64[np.isfinite(t64)]
        t32 = t64.astype(np.float32).astype(np.float64)
        risky = t64[t32 != t64]
        if not len(risky):
            continue
        risky32 = risky.astype(np.float32).astype(np.float64)
        for row in rows.tolist():
            x = float(matrix[row, feature])
            flips = np.flatnonzero((x <= risky) != (x <= risky32))
            if len(flips):
                found.append((row, feature, x, float(risky[flips[0]])))
    return found


def _class_order(source: np.ndarray, converted: np.ndarray, tolerance: float) -> tuple[int, ...] | None:
    k = source.shape[1]
    orders: list[tuple[int, ...]] = (
        list(itertools.permutations(range(k))) if k <= _MAX_PERMUTED_CLASSES else [tuple(range(k - 1, -1, -1))]
    )
    for order in orders:
        if order == tuple(range(k)):
            continue
        if np.all(np.abs(converted[:, list(order)] - source) <= tolerance):
            return order
    return None


def _threshold_cause(
    matrix: np.ndarray, differing: np.ndarray, thresholds: Mapping[int, np.ndarray], features: Sequence[str]
) -> tuple[str | None, int | None]:
    crossings = threshold_crossings(matrix, differing[:50], thresholds)
    if not crossings:
        return None, None
    row, feature, value, threshold = crossings[0]
    return (
        f"float32 split thresholds: {features[feature]!r} = {value:.9g} on {{row}} lies between the "
        f"source's float64 split threshold {threshold!r} and its float32 rounding "
        f"{float(np.float32(threshold))!r}, which the ONNX tree compares against ({len(crossings)} such "
        "crossings on the differing rows)"
    ), row


def prove_classifier(
    source_probabilities: np.ndarray,
    converted_probabilities: np.ndarray,
    source_labels: np.ndarray,
    converted_labels: np.ndarray,
    *,
    matrix: np.ndarray,
    features: Sequence[str],
    thresholds: Mapping[int, np.ndarray] | None = None,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> Proof:
    """Compare class probabilities ([rows, classes], both in the source's class order) and predicted labels."""
    source = np.asarray(source_probabilities, dtype=np.float64)
    converted = np.asarray(converted_probabilities, dtype=np.float64)
    rows = source.shape[0]
    if converted.shape != source.shape:
        cause = f"the converted model gives {converted.shape[1:]} probabilities per row, the source {source.shape[1:]}"
        return Proof(rows, "absolute", tolerance, float("inf"), rows, (), cause)
    gap = np.abs(converted - source)
    bad_probability = (gap > tolerance) | ~np.isfinite(converted)
    top2 = np.sort(source, axis=1)[:, -2:] if source.shape[1] > 1 else np.ones((rows, 2))
    decisive = (top2[:, 1] - top2[:, 0]) > 2 * tolerance
    bad_label = decisive & (np.asarray(source_labels) != np.asarray(converted_labels))
    bad_rows = np.flatnonzero(bad_probability.any(axis=1) | bad_label)
    max_gap = float(gap.max()) if gap.size else 0.0
    if not len(bad_rows):
        return Proof(rows, "absolute", tolerance, max_gap, 0)
    probability_rows = np.flatnonzero(bad_probability.any(axis=1))
    if len(probability_rows):

        def build(row: int) -> Difference:
            column = int(np.argmax(gap[row]))
            return Difference(row, column, float(source[row, column]), float(converted[row, column]))

        differences = _first(probability_rows, build)
    else:
        differences = _first(
            bad_rows,
            lambda row: Difference(row, None, float(source_labels[row]), float(converted_labels[row]), "label"),
        )
    cause: str | None = None
    cause_row: int | None = None
    if len(probability_rows):
        order = _class_order(source, converted, tolerance)
        if order is not None:
            cause = (
                f"class order: the converted model's probability columns hold the source's classes in the order "
                f"{list(order)} (a converter that reordered the classes)"
            )
        else:
            cause, cause_row = _threshold_cause(matrix, probability_rows, thresholds or {}, features)
    else:
        cause = "labels: the probabilities agree but the converted label output maps classes differently"
    return Proof(rows, "absolute", tolerance, max_gap, len(bad_rows), differences, cause, cause_row)


def prove_regressor(
    source_values: np.ndarray,
    converted_values: np.ndarray,
    *,
    matrix: np.ndarray,
    features: Sequence[str],
    thresholds: Mapping[int, np.ndarray] | None = None,
    tolerance: float = REGRESSION_TOLERANCE,
) -> Proof:
    """Compare a regressor's values, relative to each source value (floored at the mean absolute value)."""
    source = np.asarray(source_values, dtype=np.float64).reshape(-1)
    converted = np.asarray(converted_values, dtype=np.float64).reshape(-1)
    rows = len(source)
    if converted.shape != source.shape:
        return Proof(rows, "relative", tolerance, float("inf"), rows, (), "the converted model gives other shapes")
    scale = max(float(np.mean(np.abs(source))) if rows else 0.0, np.finfo(np.float64).tiny)
    relative = np.abs(converted - source) / np.maximum(np.abs(source), scale)
    bad = np.flatnonzero((relative > tolerance) | ~np.isfinite(converted))
    max_relative = float(relative.max()) if rows else 0.0
    if not len(bad):
        return Proof(rows, "relative", tolerance, max_relative, 0)
    differences = _first(bad, lambda row: Difference(row, None, float(source[row]), float(converted[row]), "value"))
    cause, cause_row = _threshold_cause(matrix, bad, thresholds or {}, features)
    return Proof(rows, "relative", tolerance, max_relative, len(bad), differences, cause, cause_row)
