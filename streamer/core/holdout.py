"""Holdout metrics of a model version and the gate that compares a new version with the champion.

Every figure an import or ``models validate --holdout`` reports is computed here, from values: the labels of
the holdout rows and what serving read from the model on those rows (``score`` and ``label``, exactly as a
prediction carries them). The figures, by task:

- binary classification: accuracy at the card's ``threshold`` (``score >= threshold`` is class 1, as the rolling
  evaluation counts it), exact AUC (the rank statistic, ties counted half), and log loss of ``score`` as the
  probability of class 1 (clipped to [1e-15, 1 - 1e-15]);
- multiclass classification: accuracy of the predicted ``label`` (the score is one column, so neither AUC nor
  log loss can be computed from it);
- regression: RMSE and mean absolute error of ``score`` against the label.

The gate (``gate``): a candidate is *worse* than the champion by ``worse_by`` in the gate metric, in that
metric's own units, the sign taken so that a positive ``worse_by`` is always a loss (AUC and accuracy lower,
log loss and RMSE higher). It passes when ``worse_by <= max_regression``. Pure: numpy only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIGHER_IS_BETTER = ("accuracy", "auc")
LOWER_IS_BETTER = ("log_loss", "rmse", "mae")
METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER
_EPS = 1e-15


@dataclass(frozen=True, slots=True)
class HoldoutMetrics:
    """Figures of one version on ``rows`` holdout rows; a figure the task has no meaning for is None."""

    rows: int
    accuracy: float | None = None
    auc: float | None = None
    log_loss: float | None = None
    rmse: float | None = None
    mae: float | None = None

    def figures(self) -> dict[str, float]:
        """The figures that exist, by name, rounded to 6 decimals (for cards, events and tables)."""
        values = {name: getattr(self, name) for name in METRICS}
        return {name: round(float(v), 6) for name, v in values.items() if v is not None}


def default_metric(task: str) -> str:
    """The gate metric when none is given: AUC for a binary classifier, accuracy for a multiclass one, RMSE
    for a regressor."""
    return {"binary-classification": "auc", "multiclass-classification": "accuracy"}.get(task, "rmse")


def auc_of(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact ROC AUC: the probability that a positive row scores above a negative one (ties count half);
    None without both classes."""
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score, ties averaged
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def metrics_of(
    task: str, labels: np.ndarray, score: np.ndarray, label: np.ndarray | None, threshold: float
) -> HoldoutMetrics:
    """The figures of one version on the holdout: ``labels`` the true values, ``score`` and ``label`` what the
    version answered for the same rows (``label`` may be None for a regressor)."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    rows = len(y)
    if rows == 0:
        return HoldoutMetrics(0)
    if task == "regression":
        error = s - y
        return HoldoutMetrics(rows, rmse=float(np.sqrt(np.mean(error**2))), mae=float(np.mean(np.abs(error))))
    if task == "multiclass-classification":
        predicted = np.asarray(label) if label is not None else np.full(rows, -1)
        return HoldoutMetrics(rows, accuracy=float(np.mean(predicted == y)))
    p = np.clip(s, _EPS, 1 - _EPS)
    loss = -np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))
    return HoldoutMetrics(
        rows,
        accuracy=float(np.mean((s >= threshold) == (y == 1))),
        auc=auc_of(y, s),
        log_loss=float(loss),
    )


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The candidate against the champion in ``metric``: ``worse_by`` > 0 is a loss, in the metric's units."""

    metric: str
    candidate: float
    champion: float
    worse_by: float
    max_regression: float

    @property
    def passed(self) -> bool:
        return self.worse_by <= self.max_regression

    def describe(self) -> str:
        direction = "worse" if self.worse_by > 0 else "better"
        return (
            f"{self.metric} {self.candidate:.6g} against the champion's {self.champion:.6g}: "
            f"{direction} by {abs(self.worse_by):.6g} (allowed: {self.max_regression:g})"
        )


def gate_problem(task: str, metric: str) -> str | None:
    """Why ``metric`` cannot gate a version of ``task``, or None."""
    if metric not in METRICS:
        return f"the gate metric must be one of {', '.join(METRICS)}, got {metric!r}"
    available = {
        "binary-classification": ("accuracy", "auc", "log_loss"),
        "multiclass-classification": ("accuracy",),
        "regression": ("rmse", "mae"),
    }[task]
    if metric not in available:
        return f"a {task} model is measured by {', '.join(available)}, not {metric}"
    return None


def gate(candidate: HoldoutMetrics, champion: HoldoutMetrics, metric: str, max_regression: float) -> GateVerdict:
    """Compare two versions measured on the same rows. Raises ``ValueError`` when either lacks ``metric``
    (e.g. AUC on a holdout with one class only): the caller says which."""
    new, old = getattr(candidate, metric), getattr(champion, metric)
    if new is None or old is None:
        raise ValueError(f"{metric} cannot be computed on these rows (a holdout with a single class?)")
    worse_by = old - new if metric in HIGHER_IS_BETTER else new - old
    return GateVerdict(metric, float(new), float(old), float(worse_by), max_regression)
