"""Online logistic regression by FTRL-Proximal (McMahan et al., 2013), on an explicit state value.

The state (``FtrlState``) is two vectors, ``z`` and ``n``, one entry per feature plus the bias, and the
hyper-parameters. Weights are derived from it, never stored: ``weights(state)``. Features are standardised
with the fixed ``mean``/``scale`` the state carries (from the training reference), because FTRL's per-feature
learning rates assume comparable magnitudes.

``learn_many`` applies labelled rows one after the other (FTRL is sequential: the gradient of a row depends on
the weights after the previous one) and returns a new state; ``predict_proba_many`` scores a matrix. Per
feature, one step is: ``g = (p - y) x``; ``n' = min(n + g², n_max)``; ``sigma = (sqrt(n') - sqrt(n)) / alpha``;
``z += g - sigma w``; ``n = n'``. ``n_max`` is infinite unless the parameters set a learning-rate floor
(``FtrlParams.rate_floor``): the per-coordinate step ``alpha / (beta + sqrt(n))`` then never falls below it,
and with ``l1 = 0`` a weight moves by ``-g / ((beta + sqrt(n')) / alpha + l2)`` at every step, an SGD step
(``sigma`` keeps the weights continuous however ``n`` moves). The Redis store applies the same step in a Lua
script so that concurrent workers share one state atomically; this module is the reference it is tested against.

``from_weights`` starts from a fitted logistic model: it inverts the weight formula at ``n = 0`` for any ``l1``
(``z = -w ((beta + sqrt(n)) / alpha + l2) - sign(w) l1``), so ``weights(from_weights(w)) == w`` up to rounding,
and ``weights(state)`` exports the current ones, e.g. to freeze them into an ONNX model version.

Invariant of valid parameters (``FtrlParams.problem`` is None): ``alpha > 0``, ``beta, l1, l2 >= 0``, all finite,
and ``beta + l2 > 0`` -- the weight formula divides by ``(beta + sqrt(n)) / alpha + l2``, which is then positive
for every ``n >= 0``; with ``beta = l2 = 0`` a coordinate that has seen no gradient would have no weight; and
``0 <= rate_floor <= alpha / beta`` (the step of a fresh coordinate: a floor above it could never hold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class FtrlParams:
    """FTRL-Proximal hyper-parameters; the defaults are the ``[online]`` card defaults (docs/learning.md). Kept
    by ``bench/drift.py``: every larger ``alpha`` measured lowered the accuracy on a stationary stream, and a
    restart on a detected drift (``on_drift``) recovers within the bars without it."""

    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 1.0
    # The smallest per-coordinate step ``alpha / (beta + sqrt(n))`` a coordinate keeps; 0 = none (steps decay
    # as ``1 / sqrt(n)`` for ever). Off by default: measured by ``bench/drift.py`` (docs/learning.md).
    rate_floor: float = 0.0

    def problem(self) -> str | None:
        """Why these parameters cannot drive the learner (one clause naming the field and the fix), or None."""
        for name in ("alpha", "beta", "l1", "l2", "rate_floor"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                return f"online.{name} must be a finite non-negative number"
        if self.alpha <= 0:
            return "online.alpha must be positive"
        if self.beta + self.l2 <= 0:
            return "online.beta and online.l2 cannot both be 0 (a weight with no gradient yet would be undefined)"
        if self.rate_floor * self.beta > self.alpha:
            return (
                f"online.rate_floor must be at most online.alpha / online.beta = {self.alpha / self.beta:g} "
                "(the step a fresh coordinate starts with); lower it, or set 0 for no floor"
            )
        return None

    @property
    def n_max(self) -> float:
        """The cap on each coordinate's accumulated squared gradient that keeps its step at or above
        ``rate_floor``: ``alpha / (beta + sqrt(n_max)) == rate_floor``; infinite without a floor. The one place
        the floor becomes arithmetic: the Lua step in Redis receives this number."""
        if self.rate_floor <= 0:
            return math.inf
        return max(self.alpha / self.rate_floor - self.beta, 0.0) ** 2


@dataclass(frozen=True, slots=True)
class FtrlState:
    z: np.ndarray  # [d + 1], the last entry is the bias
    n: np.ndarray  # [d + 1]
    mean: np.ndarray  # [d]
    scale: np.ndarray  # [d]
    params: FtrlParams = field(default_factory=FtrlParams)
    updates: int = 0


def initial(mean: np.ndarray, scale: np.ndarray, params: FtrlParams = FtrlParams()) -> FtrlState:
    d = len(mean)
    scale = np.where(np.asarray(scale, dtype=np.float64) > 0, scale, 1.0)
    return FtrlState(np.zeros(d + 1), np.zeros(d + 1), np.asarray(mean, dtype=np.float64), scale, params)


def weights_from_zn(z: np.ndarray, n: np.ndarray, params: FtrlParams) -> np.ndarray:
    shrunk = np.sign(z) * np.maximum(np.abs(z) - params.l1, 0.0)
    return -shrunk / ((params.beta + np.sqrt(n)) / params.alpha + params.l2)


def weights(state: FtrlState) -> np.ndarray:
    """Current weights on standardised features, bias last."""
    return weights_from_zn(state.z, state.n, state.params)


def from_weights(
    coef: np.ndarray, bias: float, mean: np.ndarray, scale: np.ndarray, params: FtrlParams = FtrlParams()
) -> FtrlState:
    """A state (``n = 0``) whose weights are ``coef`` (on standardised features) and ``bias``, for any ``l1``.

    With ``n = 0`` the weight of ``z`` is ``-sign(z) max(|z| - l1, 0) / (beta / alpha + l2)``; for ``w != 0`` the
    ``z`` giving it is ``-w (beta / alpha + l2) - sign(w) l1`` (then ``|z| > l1`` and ``sign(z) = -sign(w)``), and
    ``w = 0`` is ``z = 0``. Exact up to the rounding of ``z``: relative 1e-15, plus an absolute few float64
    epsilons of ``l1 / (beta / alpha + l2)`` when ``l1 > 0`` (a weight far below that becomes 0). Needs valid parameters
    (``params.problem()`` is None, checked by the card parser); raises ``ValueError`` otherwise.
    """
    problem = params.problem()
    if problem is not None:
        raise ValueError(problem)
    state = initial(mean, scale, params)
    w = np.append(np.asarray(coef, dtype=np.float64), bias)
    return replace(state, z=-w * (params.beta / params.alpha + params.l2) - np.sign(w) * params.l1)


def standardise(state: FtrlState, x: np.ndarray) -> np.ndarray:
    x = (np.asarray(x, dtype=np.float64) - state.mean) / state.scale
    return np.hstack([x, np.ones((x.shape[0], 1))])


def predict_proba_many(state: FtrlState, x: np.ndarray) -> np.ndarray:
    margin = standardise(state, x) @ weights(state)
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -35, 35)))


def learn_many(state: FtrlState, x: np.ndarray, y: np.ndarray) -> FtrlState:
    """Apply the rows of ``x`` with labels ``y`` (0/1) in order; returns the new state."""
    rows = standardise(state, x)
    z, n, p = state.z.copy(), state.n.copy(), state.params
    n_max = p.n_max
    for row, label in zip(rows, np.asarray(y, dtype=np.float64), strict=True):
        w = weights_from_zn(z, n, p)
        probability = 1.0 / (1.0 + np.exp(-np.clip(row @ w, -35, 35)))
        g = (probability - label) * row
        grown = np.minimum(n + g * g, n_max)  # == n + g² bit for bit without a floor (n_max infinite)
        sigma = (np.sqrt(grown) - np.sqrt(n)) / p.alpha
        z += g - sigma * w
        n = grown
    return replace(state, z=z, n=n, updates=state.updates + len(rows))


# What an ``[online]`` model does when a concept drift is detected on its error stream (``core.label_monitor``).
ON_DRIFT = ("restart", "reset-rates", "none")


def restart(state: FtrlState) -> FtrlState:
    """A fresh learner: zero weights and zero accumulated gradients, the same standardisation and parameters.

    The per-coordinate step ``alpha / (beta + sqrt(n))`` is at its largest again, so the labels that follow
    move the weights as fast as the first labels of a new model did."""
    return replace(state, z=np.zeros_like(state.z), n=np.zeros_like(state.n))


def reset_rates(state: FtrlState) -> FtrlState:
    """The same weights with the learning rates of a fresh learner: ``n = 0`` and ``z`` re-derived so that
    ``weights(reset_rates(s)) == weights(s)`` (``from_weights``). Keeps what was learnt, forgets how sure it was."""
    w = weights(state)
    p = state.params
    return replace(state, z=-w * (p.beta / p.alpha + p.l2) - np.sign(w) * p.l1, n=np.zeros_like(state.n))


def adapted(state: FtrlState, on_drift: str, x_since: np.ndarray, y_since: np.ndarray) -> FtrlState:
    """``state`` after a concept drift detected ``len(y_since)`` labels ago (rows ``x_since``, labels ``y_since``).

    ``restart``: a fresh learner that then learns the labels since the detection again, so that it starts from
    the new concept's labels only; ``reset-rates``: the current weights (which already learnt those labels) with
    fresh learning rates; ``none``: unchanged. Deterministic: every worker that applies it to the same state and
    labels gets the same state (the shared one is written once, by the worker that decided)."""
    if on_drift == "restart":
        fresh = restart(state)
        if len(y_since):
            fresh = learn_many(fresh, x_since, y_since)
        return replace(fresh, updates=state.updates)
    if on_drift == "reset-rates":
        return reset_rates(state)
    if on_drift == "none":
        return state
    raise ValueError(f"on_drift must be one of {', '.join(ON_DRIFT)}, got {on_drift!r}")
