"""FTRL-Proximal against a scalar reference implementation, and its learning behaviour."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer import synthetic
from streamer.core import learner


def reference_ftrl(rows: list[list[float]], labels: list[int], alpha: float, beta: float, l1: float, l2: float):
    """McMahan et al. (2013), Algorithm 1, written out per coordinate with plain floats."""
    d = len(rows[0]) + 1
    z, n = [0.0] * d, [0.0] * d
    for row, y in zip(rows, labels, strict=True):
        x = [*row, 1.0]
        w = [
            0.0 if abs(z[i]) <= l1 else -(z[i] - math.copysign(l1, z[i])) / ((beta + math.sqrt(n[i])) / alpha + l2)
            for i in range(d)
        ]
        margin = max(min(sum(wi * xi for wi, xi in zip(w, x, strict=True)), 35), -35)
        p = 1 / (1 + math.exp(-margin))
        for i in range(d):
            g = (p - y) * x[i]
            sigma = (math.sqrt(n[i] + g * g) - math.sqrt(n[i])) / alpha
            z[i] += g - sigma * w[i]
            n[i] += g * g
    return z, n


@given(
    st.lists(
        st.tuples(st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3), st.integers(0, 1)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([0.0, 0.5]),
)
def test_updates_match_the_reference_on_the_same_stream(stream, l1: float) -> None:
    rows = [r for r, _ in stream]
    labels = [y for _, y in stream]
    params = learner.FtrlParams(alpha=0.2, beta=1.0, l1=l1, l2=0.5)
    state = learner.initial(np.zeros(3), np.ones(3), params)
    state = learner.learn_many(state, np.array(rows), np.array(labels))
    z, n = reference_ftrl(rows, labels, 0.2, 1.0, l1, 0.5)
    np.testing.assert_allclose(state.z, z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state.n, n, rtol=1e-9, atol=1e-12)
    assert state.updates == len(rows)


@given(st.lists(st.floats(-2, 2, allow_nan=False), min_size=4, max_size=4), st.floats(-1, 1, allow_nan=False))
def test_starting_from_weights_gives_them_back(coef: list[float], bias: float) -> None:
    state = learner.from_weights(np.array(coef), bias, np.zeros(4), np.ones(4))
    np.testing.assert_allclose(learner.weights(state), [*coef, bias], rtol=1e-12, atol=1e-12)


def test_it_learns_the_synthetic_fraud_rule() -> None:
    x = synthetic.transactions(20_000, seed=3)
    y = synthetic.labels(x, seed=3)
    state = learner.initial(x.mean(axis=0), x.std(axis=0))
    state = learner.learn_many(state, x[:15_000], y[:15_000])
    p = learner.predict_proba_many(state, x[15_000:])
    positives, negatives = p[y[15_000:] == 1], p[y[15_000:] == 0]
    auc = np.mean(positives[:, None] > negatives[None, :])
    assert auc > 0.75, auc
