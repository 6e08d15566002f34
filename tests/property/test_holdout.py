"""core.holdout: the exact AUC equals a naive count over every (positive, negative) pair, ties counted half; the
gate's worse_by is antisymmetric (swapping candidate and champion flips its sign)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.holdout import METRICS, HoldoutMetrics, auc_of, gate

rows = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=1, max_size=60)


@given(rows)
def test_auc_equals_the_pairwise_count(pairs: list[tuple[int, int]]) -> None:
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] / 20 for p in pairs])  # few distinct values: many ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if not len(positives) or not len(negatives):
        assert auc_of(labels, scores) is None
        return
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    auc = auc_of(labels, scores)
    assert auc is not None and abs(auc - wins / (len(positives) * len(negatives))) <= 1e-12


@given(st.sampled_from(METRICS), st.floats(0, 10), st.floats(0, 10))
def test_worse_by_flips_sign_when_the_versions_swap(metric: str, a: float, b: float) -> None:
    first, second = HoldoutMetrics(1, **{metric: a}), HoldoutMetrics(1, **{metric: b})
    assert gate(first, second, metric, 0.0).worse_by == -gate(second, first, metric, 0.0).worse_by
