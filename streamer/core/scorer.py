"""The scorer contract: what the scoring graph calls to run one model version over a feature matrix.

``Scorer.infer(card, matrix)`` is the ``Infer`` of ``core.graph`` (pass ``scorer.infer``). Every implementation
-- ``adapters.onnx_scorer.OnnxScorer`` (ONNX Runtime), ``serving.ModelSet`` (the set a batch is
scored with), ``tests/function_scorer.py`` (plain functions, for tests) -- passes one suite of checks,
``tests/contract/scorer_checks.py``:

- input: a float32 matrix ``[rows, len(card.features)]``, columns in the card's feature order;
- rows out equal rows in: every output's first dimension is ``rows``, also for ``rows == 0``;
- a matrix of another rank, width or dtype, or a version the scorer does not serve, raises ``ScoringError``
  (never a library's exception): the rows of that batch and model become ``scoring-failed`` dead letters;
- deterministic: the same matrix gives the same outputs, bit for bit;
- safe to call from several threads at once, each call's outputs those of a call made alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from streamer.core.cards import ModelCard
from streamer.core.errors import ScoringError


@runtime_checkable
class Scorer(Protocol):
    __slots__ = ()  # implementations may be slotted dataclasses (``ModelSet``)

    def infer(self, card: ModelCard, matrix: np.ndarray) -> Mapping[str, np.ndarray]:
        """The outputs of ``card``'s model over ``matrix`` (module docstring), or ``ScoringError``."""
        ...


def check_matrix(card: ModelCard, matrix: np.ndarray) -> None:
    """``ScoringError`` unless ``matrix`` is what ``card``'s model takes: float32, ``[rows, features]``."""
    width = len(card.features)
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or matrix.shape[1] != width:
        shape = getattr(matrix, "shape", type(matrix).__name__)
        raise ScoringError(f"{card.ref}: input of shape {shape}, the model takes [rows, {width}]")
    if matrix.dtype != np.float32:
        raise ScoringError(f"{card.ref}: input of dtype {matrix.dtype}, the model takes float32")
