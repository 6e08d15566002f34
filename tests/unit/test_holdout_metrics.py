"""core.holdout: the import's figures against scikit-learn's, and the gate's direction per metric."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, roc_auc_score

from streamer.core.holdout import HoldoutMetrics, auc_of, default_metric, gate, gate_problem, metrics_of


def test_binary_figures_equal_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    score = np.clip(0.3 * y + rng.uniform(0, 0.7, 500), 0, 1)
    score[:50] = np.round(score[:50], 1)  # ties, which the AUC counts half
    m = metrics_of("binary-classification", y, score, None, 0.4)
    assert m.rows == 500
    assert m.auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert m.log_loss == pytest.approx(log_loss(y, score), abs=1e-9)
    assert m.accuracy == pytest.approx(accuracy_score(y, score >= 0.4))
    assert m.rmse is None


def test_regression_and_multiclass_figures() -> None:
    y = np.array([1.0, 2.0, 4.0])
    m = metrics_of("regression", y, np.array([1.5, 2.0, 3.0]), None, 0.5)
    assert m.rmse == pytest.approx(np.sqrt((0.25 + 0 + 1) / 3))
    assert m.mae == pytest.approx(mean_absolute_error(y, [1.5, 2.0, 3.0]))
    multi = metrics_of("multiclass-classification", np.array([0, 1, 2, 2]), np.ones(4), np.array([0, 1, 1, 2]), 0.5)
    assert multi.accuracy == 0.75 and multi.auc is None and multi.log_loss is None
    assert multi.figures() == {"accuracy": 0.75}


def test_auc_needs_both_classes() -> None:
    assert auc_of(np.ones(4), np.linspace(0, 1, 4)) is None
    assert auc_of(np.array([0, 1]), np.array([0.2, 0.9])) == 1.0


@pytest.mark.parametrize(
    ("metric", "candidate", "champion", "worse_by"),
    [
        ("auc", 0.80, 0.85, 0.05),
        ("accuracy", 0.95, 0.90, -0.05),
        ("log_loss", 0.40, 0.30, 0.10),
        ("rmse", 1.0, 2.0, -1.0),
    ],
)
def test_a_positive_worse_by_is_always_a_loss(metric: str, candidate: float, champion: float, worse_by: float) -> None:
    verdict = gate(HoldoutMetrics(10, **{metric: candidate}), HoldoutMetrics(10, **{metric: champion}), metric, 0.01)
    assert verdict.worse_by == pytest.approx(worse_by)
    assert verdict.passed == (worse_by <= 0.01)
    assert ("worse" if worse_by > 0 else "better") in verdict.describe()


def test_the_gate_refuses_what_it_cannot_compare() -> None:
    with pytest.raises(ValueError, match="auc cannot be computed"):
        gate(HoldoutMetrics(10, auc=None), HoldoutMetrics(10, auc=0.9), "auc", 0.01)
    assert gate_problem("regression", "auc") == "a regression model is measured by rmse, mae, not auc"
    assert gate_problem("binary-classification", "nope") is not None
    assert gate_problem("multiclass-classification", default_metric("multiclass-classification")) is None
    assert [default_metric(t) for t in ("binary-classification", "regression")] == ["auc", "rmse"]
