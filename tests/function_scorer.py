"""``FunctionScorer``: models as plain functions of the matrix, a ``streamer.core.scorer.Scorer`` for tests.

It passes the same contract suite as the ONNX Runtime scorer (``tests/contract/scorer_checks.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from streamer.core.cards import ModelCard
from streamer.core.errors import ScoringError
from streamer.core.scorer import Scorer, check_matrix

Model = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class FunctionScorer(Scorer):
    """Models as plain functions of the matrix, by ``name@version``: the scorer of unit tests.

    Checks the input (``check_matrix``) and the row count of every output, as the contract asks; a function
    that raises fails the call with ``ScoringError``. Immutable; as thread-safe as its functions."""

    def __init__(self, models: Mapping[str, Model]) -> None:
        self._models = dict(models)

    def infer(self, card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
        model = self._models.get(card.ref)
        if model is None:
            raise ScoringError(f"{card.ref} is not loaded")
        check_matrix(card, matrix)
        try:
            outputs = {name: np.asarray(value) for name, value in model(matrix).items()}
        except ScoringError:
            raise
        except Exception as exc:  # the function's own failure is the batch's, as an inference failure would be
            raise ScoringError(f"{card.ref}: {type(exc).__name__}: {exc}") from None
        rows = matrix.shape[0]
        for name, value in outputs.items():
            if value.shape[:1] != (rows,):
                raise ScoringError(f"{card.ref}: output {name!r} has shape {value.shape} for {rows} rows")
        return outputs
