"""A calibration stage for a frozen binary classifier: a logistic model over the frozen model's logit and chosen
features, learnt online from the version's labels (FTRL-Proximal, ``core.learner``), so that a model whose trees
cannot learn follows a changed concept as a linear online model does.

The served score is ``sigmoid(w0 * logit(p) + sum_j w_j * (x_j - mean_j) / scale_j + b)``, with ``p`` the frozen
model's score (clipped to ``[1e-6, 1 - 1e-6]`` so the logit stays finite) and ``x_j`` the chosen features. It
starts as the identity (``w0 = 1``, every other weight and ``b`` 0: the frozen model's score unchanged) and learns
from every joined label, in the label stream's order, one FTRL step each; a concept drift detected on the
version's error stream adapts it as ``[online]`` learners are (``learner.adapted``). The state is an ordinary
``FtrlState`` whose first input is the logit (mean 0, scale 1).

Invariants: ``score_many(initial(spec), p, x) == p`` up to the clip; ``inputs`` is what ``learn_many`` learns
from and ``score_many`` scores, so a state learnt here scores the labels' rows as the served graph does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.core import learner
from streamer.core.learner import FtrlParams, FtrlState

CLIP = 1e-6


@dataclass(frozen=True, slots=True)
class CalibrationSpec:
    """``[calibration]`` of a card: the chosen features (by column in the card's feature order), their
    standardisation, the learner's parameters and what a concept drift does to it."""

    columns: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    params: FtrlParams = field(default_factory=FtrlParams)
    on_drift: str = "restart"


def logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), CLIP, 1 - CLIP)
    return np.log(p) - np.log1p(-p)


def inputs(spec: CalibrationSpec, scores: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The learner's rows: the frozen logit, then the chosen columns of ``matrix`` (raw; the state standardises)."""
    chosen = np.asarray(matrix, dtype=np.float64)[:, list(spec.columns)]
    return np.column_stack([logit(scores), chosen])


def initial(spec: CalibrationSpec) -> FtrlState:
    """The identity: the frozen model's logit with weight 1, nothing else."""
    k = len(spec.columns)
    mean = np.array([0.0, *spec.mean], dtype=np.float64)
    scale = np.array([1.0, *spec.scale], dtype=np.float64)
    coef = np.zeros(k + 1)
    coef[0] = 1.0
    return learner.from_weights(coef, 0.0, mean, scale, spec.params)


def score_many(state: FtrlState, scores: np.ndarray, matrix: np.ndarray, spec: CalibrationSpec) -> np.ndarray:
    return learner.predict_proba_many(state, inputs(spec, scores, matrix))


def learn_many(
    state: FtrlState, scores: np.ndarray, matrix: np.ndarray, labels: np.ndarray, spec: CalibrationSpec
) -> FtrlState:
    """One FTRL step per labelled row (frozen scores ``scores`` of rows ``matrix``), in order."""
    return learner.learn_many(state, inputs(spec, scores, matrix), (np.asarray(labels) >= 0.5).astype(np.float64))
