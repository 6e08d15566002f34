"""FTRL-Proximal against a scalar reference implementation, and its learning behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer import synthetic
from streamer.core import learner


def reference_ftrl(
    rows: list[list[float]], labels: list[int], alpha: float, beta: float, l1: float, l2: float, floor: float = 0.0
):
    """McMahan et al. (2013), Algorithm 1, written out per coordinate with plain floats; with a learning-rate
    floor, each coordinate's n stops growing where alpha / (beta + sqrt(n)) reaches it."""
    n_max = (alpha / floor - beta) ** 2 if floor > 0 else math.inf
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
            grown = min(n[i] + g * g, n_max)
            sigma = (math.sqrt(grown) - math.sqrt(n[i])) / alpha
            z[i] += g - sigma * w[i]
            n[i] = grown
    return z, n


@given(
    st.lists(
        st.tuples(st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3), st.integers(0, 1)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([0.0, 0.5]),
    st.sampled_from([0.0, 0.05, 0.15, 0.2]),
)
def test_updates_match_the_reference_on_the_same_stream(stream, l1: float, floor: float) -> None:
    rows = [r for r, _ in stream]
    labels = [y for _, y in stream]
    params = learner.FtrlParams(alpha=0.2, beta=1.0, l1=l1, l2=0.5, rate_floor=floor)
    state = learner.initial(np.zeros(3), np.ones(3), params)
    state = learner.learn_many(state, np.array(rows), np.array(labels))
    z, n = reference_ftrl(rows, labels, 0.2, 1.0, l1, 0.5, floor)
    np.testing.assert_allclose(state.z, z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state.n, n, rtol=1e-9, atol=1e-12)
    assert state.updates == len(rows)


# Parameters as cards give them (beta and l2 zero or at least 1e-6), weights as ONNX gives them (float32: zero or
# at least ~1e-38 in magnitude): so that w (beta / alpha + l2) is a normal float64, the premise of the round trip.
valid_params = st.builds(
    learner.FtrlParams,
    alpha=st.floats(1e-3, 10),
    beta=st.one_of(st.just(0.0), st.floats(1e-6, 10)),
    l1=st.one_of(st.just(0.0), st.floats(0, 100)),
    l2=st.one_of(st.just(0.0), st.floats(1e-6, 10)),
).filter(lambda p: p.problem() is None)
weight = st.one_of(st.just(0.0), st.floats(-50, 50).filter(lambda v: v == 0 or abs(v) >= 1e-30))


@given(st.lists(weight, min_size=4, max_size=4), weight, valid_params)
def test_starting_from_weights_gives_them_back_for_any_l1(
    coef: list[float], bias: float, params: learner.FtrlParams
) -> None:
    """The inversion of FTRL's weight formula at n = 0: weights_from_zn(from_weights(w)) == w for every l1."""
    state = learner.from_weights(np.array(coef), bias, np.zeros(4), np.ones(4), params)
    assert not state.n.any() and state.params == params
    got = learner.weights_from_zn(state.z, state.n, params)
    # Rounding z = -(|w| D + l1) sign(w) loses what of |w| D is below an ulp of l1: an absolute error of a few
    # float64 epsilons of l1 / D (D = beta / alpha + l2), nothing for l1 = 0.
    slack = 4 * np.finfo(np.float64).eps * params.l1 / (params.beta / params.alpha + params.l2)
    np.testing.assert_allclose(got, [*coef, bias], rtol=1e-12, atol=slack)
    assert not got[np.array([*coef, bias]) == 0].any()  # a zero weight stays exactly zero


@given(valid_params)
def test_l1_starting_state_learns_like_the_reference(params: learner.FtrlParams) -> None:
    """From a non-zero start with l1 > 0, learning is still McMahan's algorithm from that (z, n)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 3)), (rng.random(30) < 0.4).astype(int)
    state = learner.from_weights(np.array([0.5, -0.2, 0.0]), 0.1, np.zeros(3), np.ones(3), params)
    z, n = state.z.copy(), state.n.copy()
    for row, label in zip(x, y, strict=True):  # the per-coordinate step, written out
        row = np.append(row, 1.0)
        w = learner.weights_from_zn(z, n, params)
        p = 1 / (1 + np.exp(-np.clip(row @ w, -35, 35)))
        g = (p - label) * row
        z += g - (np.sqrt(n + g * g) - np.sqrt(n)) / params.alpha * w
        n += g * g
    learnt = learner.learn_many(state, x, y)
    np.testing.assert_allclose(learnt.z, z, rtol=1e-12, atol=1e-12)


# A stream of standardised rows with 0/1 labels, and parameters with a floor anywhere in (0, alpha / beta].
rows_and_labels = st.lists(
    st.tuples(st.lists(st.floats(-4, 4, allow_nan=False), min_size=3, max_size=3), st.integers(0, 1)),
    min_size=1,
    max_size=60,
)
floored_params = st.builds(
    lambda alpha, beta, l2, fraction: learner.FtrlParams(
        alpha=alpha, beta=beta, l1=0.0, l2=l2, rate_floor=fraction * alpha / beta
    ),
    alpha=st.floats(1e-3, 2),
    beta=st.floats(0.1, 5),
    l2=st.one_of(st.just(0.0), st.floats(1e-6, 5)),
    fraction=st.floats(1e-3, 1),
)


@given(rows_and_labels, floored_params, st.floats(0, 50))
def test_with_a_floor_every_step_stays_at_or_above_it(stream, params: learner.FtrlParams, n0: float) -> None:
    """After every label, each coordinate's step alpha / (beta + sqrt(n)) is >= rate_floor, whatever n it
    started from (n0: a state learnt before the floor), and each weight moves by exactly an SGD step at that
    rate (l1 = 0): w' = w - g / ((beta + sqrt(n')) / alpha + l2), never a smaller move than the floor's."""
    state = learner.from_weights(np.array([0.4, -0.3, 0.0]), 0.1, np.zeros(3), np.ones(3), params)
    state = learner.FtrlState(state.z, np.full(4, n0), state.mean, state.scale, params)
    floor = params.rate_floor
    for row, label in stream:
        before = learner.weights(state)
        x = np.array([row])
        p = learner.predict_proba_many(state, x)[0]
        state = learner.learn_many(state, x, np.array([label]))
        step = params.alpha / (params.beta + np.sqrt(state.n))
        assert np.all(step >= floor * (1 - 1e-9)), (step, floor)
        g = (p - label) * np.append(row, 1.0)
        expected = before - g / ((params.beta + np.sqrt(state.n)) / params.alpha + params.l2)
        np.testing.assert_allclose(learner.weights(state), expected, rtol=1e-7, atol=1e-9)
        assert np.all(
            np.abs(learner.weights(state) - before) >= np.abs(g) / (1 / floor + params.l2) * (1 - 1e-7) - 1e-12
        )


@given(rows_and_labels, valid_params)
def test_floor_0_gives_exactly_the_step_without_a_floor(stream, params: learner.FtrlParams) -> None:
    """rate_floor = 0 (the default) is bit for bit the learner before the floor existed (its step written out)."""
    assert params.rate_floor == 0 and params.n_max == math.inf
    x, y = np.array([r for r, _ in stream]), np.array([label for _, label in stream], dtype=np.float64)
    state = learner.from_weights(np.array([0.5, -0.2, 0.0]), 0.1, np.zeros(3), np.ones(3), params)
    z, n = state.z.copy(), state.n.copy()
    for row, label in zip(x, y, strict=True):
        row = np.append(row, 1.0)
        w = learner.weights_from_zn(z, n, params)
        p = 1.0 / (1.0 + np.exp(-np.clip(row @ w, -35, 35)))
        g = (p - label) * row
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / params.alpha
        z += g - sigma * w
        n += g * g
    learnt = learner.learn_many(state, x, y)
    assert np.array_equal(learnt.z, z) and np.array_equal(learnt.n, n)


def test_the_floor_caps_n_where_the_step_meets_it() -> None:
    params = learner.FtrlParams(alpha=0.1, beta=1.0, rate_floor=0.02)
    assert params.n_max == pytest.approx(16.0) and params.alpha / (params.beta + math.sqrt(params.n_max)) == 0.02
    assert learner.FtrlParams(alpha=0.1, beta=1.0, rate_floor=0.1).n_max == 0.0  # a constant step
    assert learner.FtrlParams(alpha=0.1, beta=0.0, l2=1.0, rate_floor=0.5).problem() is None  # fresh step infinite
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 3))
    y = (x @ [1.0, -1.0, 0.5] > 0).astype(float)
    learnt = learner.learn_many(learner.initial(np.zeros(3), np.ones(3), params), x, y)
    assert np.all(learnt.n <= params.n_max) and np.any(learnt.n == params.n_max)
    free = learner.learn_many(learner.initial(np.zeros(3), np.ones(3)), x, y)
    assert np.all(free.n > params.n_max)  # without the floor the steps went below it


def test_invalid_parameters_are_named() -> None:
    assert learner.FtrlParams().problem() is None
    assert learner.FtrlParams(alpha=0).problem() == "online.alpha must be positive"
    assert learner.FtrlParams(l1=-1).problem() == "online.l1 must be a finite non-negative number"
    assert learner.FtrlParams(l2=float("inf")).problem() == "online.l2 must be a finite non-negative number"
    assert "cannot both be 0" in (learner.FtrlParams(beta=0, l2=0).problem() or "")
    assert learner.FtrlParams(rate_floor=-0.01).problem() == "online.rate_floor must be a finite non-negative number"
    assert learner.FtrlParams(rate_floor=float("nan")).problem() == (
        "online.rate_floor must be a finite non-negative number"
    )
    assert learner.FtrlParams(alpha=0.1, beta=2.0, rate_floor=0.06).problem() == (
        "online.rate_floor must be at most online.alpha / online.beta = 0.05 (the step a fresh coordinate starts "
        "with); lower it, or set 0 for no floor"
    )
    with pytest.raises(ValueError, match="cannot both be 0"):
        learner.from_weights(np.ones(2), 0.0, np.zeros(2), np.ones(2), learner.FtrlParams(beta=0, l2=0))


def test_it_learns_the_synthetic_fraud_rule() -> None:
    x = synthetic.transactions(20_000, seed=3)
    y = synthetic.labels(x, seed=3)
    state = learner.initial(x.mean(axis=0), x.std(axis=0))
    state = learner.learn_many(state, x[:15_000], y[:15_000])
    p = learner.predict_proba_many(state, x[15_000:])
    positives, negatives = p[y[15_000:] == 1], p[y[15_000:] == 0]
    auc = np.mean(positives[:, None] > negatives[None, :])
    assert auc > 0.75, auc
