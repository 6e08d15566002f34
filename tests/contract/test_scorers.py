"""The scorer contract (``tests/contract/scorer_checks.py``) against every implementation of ``core.scorer.Scorer``.

- ``OnnxScorer`` (``adapters.onnx_scorer``) serving the shipped gradient-boosted model and the shipped logistic one;
- ``OnnxScorer`` serving the logistic graph ``adapters.onnx_logistic.build_logistic`` writes from learnt weights
  (what the online refresher swaps in, ``adapters.online.with_weights``);
- ``ModelSet`` (``serving``), the set a batch is scored with;
- ``FunctionScorer`` (``tests/function_scorer.py``), the pure one.

The declared-graph runner (``core.graph_exec``) and ``ScoringGraph`` consume a scorer (its ``infer``) and expose no
scorer of their own; ``check_float32_input_gives_a_score_per_row`` runs each scorer through ``ScoringGraph``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamer.adapters import online
from streamer.adapters.model_repository import LoadedModel, load_version
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ScoringError
from streamer.core.routing import Catalog
from streamer.core.scorer import Scorer
from streamer.core.state import OnlineWeights
from streamer.serving import ModelSet, cards_of
from tests.contract.scorer_checks import (
    CHECKS,
    Check,
    check_bad_shape_raises_scoring_error,
    check_deterministic,
    check_rows_out_equal_rows_in,
    check_scorer,
)
from tests.function_scorer import FunctionScorer
from tests.model_versions import GBDT, LOGISTIC


@functools.cache
def _loaded(path: Path) -> LoadedModel:
    return load_version(path, 1)


def _onnx(model: LoadedModel) -> tuple[Scorer, ModelCard]:
    return OnnxScorer({model.card.name: {model.card.version: model}}), model.card


def onnx_gbdt() -> tuple[Scorer, ModelCard]:
    return _onnx(_loaded(GBDT))


def onnx_logistic() -> tuple[Scorer, ModelCard]:
    return _onnx(_loaded(LOGISTIC))


def onnx_logistic_rebuilt() -> tuple[Scorer, ModelCard]:
    """The graph built from FTRL weights a few steps away from the shipped ones (not the shipped graph's bytes)."""
    model = _loaded(LOGISTIC)
    spec, state = online.spec_of(model)
    moved = OnlineWeights(state.z * 1.1 + 0.01, state.n + 1.0, 3)
    return _onnx(online.with_weights(model, spec, moved, threads=1))


def model_set() -> tuple[Scorer, ModelCard]:
    models = [_loaded(GBDT), _loaded(LOGISTIC)]
    scorer = OnnxScorer({m.card.name: {m.card.version: m} for m in models})
    return ModelSet(Catalog(cards_of(models)), scorer), models[1].card


TOY = ModelCard("toy", 2, "binary", ("a", "b", "c"), "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label"))


def _toy(x: np.ndarray) -> dict[str, np.ndarray]:
    p = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ np.array([0.5, -1.0, 0.25]) + 0.1)))
    return {"label": (p >= 0.5).astype(np.int64), "probabilities": np.column_stack([1 - p, p]).astype(np.float32)}


def function_scorer() -> tuple[Scorer, ModelCard]:
    return FunctionScorer({TOY.ref: _toy}), TOY


IMPLEMENTATIONS: dict[str, Callable[[], tuple[Scorer, ModelCard]]] = {
    "onnx-gbdt": onnx_gbdt,
    "onnx-logistic": onnx_logistic,
    "onnx-logistic-rebuilt": onnx_logistic_rebuilt,
    "model-set": model_set,
    "function": function_scorer,
}


@functools.cache
def implementation(name: str) -> tuple[Scorer, ModelCard]:
    return IMPLEMENTATIONS[name]()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_scorer_contract(name: str, check: Check) -> None:
    scorer, card = implementation(name)
    check(scorer, card)


def test_the_checks_catch_a_scorer_that_breaks_the_contract() -> None:
    """The suite is not vacuous: a scorer that drops a row, leaks a library error or is not deterministic fails."""

    class Broken:
        def __init__(self, fault: str) -> None:
            self.fault = fault
            self.rng = np.random.default_rng()

        def infer(self, card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
            if card != TOY:
                raise ScoringError(f"{card.ref} is not loaded")
            if matrix.ndim != 2 or matrix.shape[1] != 3 or matrix.dtype != np.float32:
                if self.fault == "leaks":
                    raise ValueError("a library's own error")
                raise ScoringError("bad input")
            out = _toy(matrix)
            if self.fault == "drops a row":
                return {k: v[:-1] for k, v in out.items()}
            if self.fault == "random":
                out["probabilities"] = out["probabilities"] + self.rng.random(out["probabilities"].shape)
            return out

    with pytest.raises(AssertionError):
        check_rows_out_equal_rows_in(Broken("drops a row"), TOY)
    with pytest.raises(ValueError):
        check_bad_shape_raises_scoring_error(Broken("leaks"), TOY)
    with pytest.raises(AssertionError):
        check_deterministic(Broken("random"), TOY)
    check_scorer(Broken("none"), TOY)  # the same double without a fault passes every check
