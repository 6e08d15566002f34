"""Online logistic regression by FTRL-Proximal (McMahan et al., 2013), on an explicit state value.

The state (``FtrlState``) is two vectors, ``z`` and ``n``, one entry per feature plus the bias, and the
hyper-parameters. Weights are derived from it, never stored: ``weights(state)``. Features are standardised
with the fixed ``mean``/``scale`` the state carries (from the training reference), because FTRL's per-feature
learning rates assume comparable magnitudes.

``learn_many`` applies labelled rows one after the other (FTRL is sequential: the gradient of a row depends on
the weights after the previous one) and returns a new state; ``predict_proba_many`` scores a matrix. Per
feature, one step is: ``g = (p - y) x``; ``sigma = (sqrt(n + g²) - sqrt(n)) / alpha``; ``z += g - sigma w``;
``n += g²``. The Redis store applies the same step in a Lua script so that concurrent workers share one
state atomically; this module is the reference it is tested against.

``from_weights`` starts from a fitted logistic model (with ``n = 0`` the weights come back exactly), and
``weights(state)`` exports the current ones, e.g. to freeze them into an ONNX model version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class FtrlParams:
    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 1.0


@dataclass(frozen=True, slots=True)
class FtrlState:
    z: np.ndarray  # [d + 1], the last entry is the bias
    n: np.ndarray  # [d + 1]
    mean: np.ndarray  # [d]
    scale: np.ndarray  # [d]
    params: FtrlParams = field(default_factory=FtrlParams)
    updates: int = 0

    @property
    def dimension(self) -> int:
        return self.mean.shape[0]


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
    """A state whose weights are exactly ``coef`` (on standardised features) and ``bias`` (needs ``l1 = 0``)."""
    if params.l1 != 0:
        raise ValueError("starting from given weights needs l1 = 0")
    state = initial(mean, scale, params)
    w = np.append(np.asarray(coef, dtype=np.float64), bias)
    return replace(state, z=-w * (params.beta / params.alpha + params.l2))


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
    for row, label in zip(rows, np.asarray(y, dtype=np.float64), strict=True):
        w = weights_from_zn(z, n, p)
        probability = 1.0 / (1.0 + np.exp(-np.clip(row @ w, -35, 35)))
        g = (probability - label) * row
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / p.alpha
        z += g - sigma * w
        n += g * g
    return replace(state, z=z, n=n, updates=state.updates + len(rows))
