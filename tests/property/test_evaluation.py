"""Rolling evaluation: equals a naive recomputation; merged state equals sequential updates."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.evaluation import WindowSpec, metrics_of, stats_of
from tests.rolling_evaluation import RollingEvaluation

WINDOWS = (WindowSpec("short", 10.0, 5), WindowSpec("long", 60.0, 6))
events = st.lists(
    st.tuples(
        st.floats(0, 200, allow_nan=False),  # time
        st.floats(0, 1, allow_nan=False),  # score
        st.integers(0, 1),  # label
    ),
    max_size=80,
)


def naive(evts: list[tuple[float, float, int]], now: float, window: WindowSpec) -> dict[str, float]:
    inside = [(s, y) for t, s, y in evts if window.bucket_of(t) in window.live_buckets(now)]
    if not inside:
        return {"count": 0}
    n = len(inside)
    correct = sum((s >= 0.5) == (y == 1) for s, y in inside)
    eps = 1e-15
    log_loss = (
        -sum(math.log(min(max(s, eps), 1 - eps)) if y else math.log(1 - min(max(s, eps), 1 - eps)) for s, y in inside)
        / n
    )
    return {"count": n, "accuracy": correct / n, "log_loss": log_loss}


@given(events, st.floats(0, 260, allow_nan=False))
def test_window_metrics_equal_a_naive_recomputation(evts: list[tuple[float, float, int]], now: float) -> None:
    evaluation = RollingEvaluation(WINDOWS)
    for t, s, y in sorted(evts):
        evaluation.update(t, np.array([s]), np.array([y]))
    for window in WINDOWS:
        got = evaluation.get(now, window)
        expected = naive(evts, now, window)
        assert got.count == expected["count"]
        if expected["count"]:
            assert math.isclose(got.accuracy, expected["accuracy"], rel_tol=1e-9)
            assert math.isclose(got.log_loss, expected["log_loss"], rel_tol=1e-9, abs_tol=1e-9)


@given(events, st.lists(st.booleans(), max_size=80), st.floats(0, 260, allow_nan=False))
def test_merged_state_equals_one_worker_seeing_everything(evts, sides, now: float) -> None:
    one, left, right = RollingEvaluation(WINDOWS), RollingEvaluation(WINDOWS), RollingEvaluation(WINDOWS)
    for index, (t, s, y) in enumerate(evts):
        one.update(t, np.array([s]), np.array([y]))
        target = left if (sides[index] if index < len(sides) else False) else right
        target.update(t, np.array([s]), np.array([y]))
    left.merge(right)
    for window in WINDOWS:
        a, b = one.get(now, window), left.get(now, window)
        assert a.count == b.count
        if a.count:
            assert math.isclose(a.accuracy, b.accuracy) and math.isclose(a.log_loss, b.log_loss, rel_tol=1e-9)


@given(events)
def test_revert_undoes_update(evts) -> None:
    evaluation = RollingEvaluation(WINDOWS)
    for t, s, y in evts:
        evaluation.update(t, np.array([s]), np.array([y]))
    for t, s, y in evts:
        evaluation.revert(t, np.array([s]), np.array([y]))
    assert all(np.allclose(v, 0) for v in evaluation.buckets.values())


@given(st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.integers(0, 1)), min_size=2, max_size=200))
def test_auc_estimate_is_exact_when_scores_fall_in_distinct_bins(pairs) -> None:
    scores = np.array([(min(int(s * 20), 19) + 0.5) / 20 for s, _ in pairs])  # bin centres: histogram AUC is exact
    labels = np.array([y for _, y in pairs])
    metrics = metrics_of(stats_of(scores, labels))
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) and len(neg):
        exact = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
        assert math.isclose(metrics.auc, exact, rel_tol=1e-9)
    else:
        assert math.isnan(metrics.auc)


def test_precision_recall_and_counts_of_a_known_batch() -> None:
    metrics = metrics_of(stats_of(np.array([0.9, 0.8, 0.2, 0.6, 0.1]), np.array([1, 0, 1, 1, 0])))
    assert metrics.count == 5
    assert metrics.accuracy == 3 / 5  # 0.9->1 ok, 0.8->0 wrong, 0.2->1 wrong, 0.6->1 ok, 0.1->0 ok
    assert metrics.precision == 2 / 3 and metrics.recall == 2 / 3
