"""ONNX Runtime inference for the scoring graph: one immutable set of warmed-up sessions.

``OnnxScorer.infer`` is the ``Infer`` the core's graph calls. ``InferenceSession.run`` releases the GIL and
is safe to call from several threads at once. A scorer never changes: hot reload and online refresh build a
new one (``with_model``/``without``) and the worker swaps it with its catalog between batches
(``serving.ServingModels``), so a batch that started with a session finishes with it. Runtime failures
become ``ScoringError`` (the rows of that batch and model are dead-lettered as ``scoring-failed``); the row
count check lives in the graph.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

from streamer.adapters.onnx_models import LoadedModel
from streamer.core.cards import ModelCard
from streamer.core.errors import ScoringError
from streamer.core.scorer import Scorer

log = logging.getLogger(__name__)


def warm_up(model: LoadedModel) -> None:
    """Run ``model`` once: the first run of a session allocates; keep that off the scoring path."""
    warm = np.zeros((1, len(model.card.features)), dtype=np.float32)
    model.session.run(None, {model.card.input: warm})


class OnnxScorer(Scorer):
    def __init__(self, models: Mapping[str, Mapping[int, LoadedModel]] | None = None) -> None:
        self._models: dict[str, LoadedModel] = {}
        for versions in (models or {}).values():
            for model in versions.values():
                warm_up(model)
                self._models[model.card.ref] = model

    @classmethod
    def _of(cls, models: Iterable[LoadedModel]) -> OnnxScorer:
        scorer = cls()
        scorer._models = {m.card.ref: m for m in models}
        return scorer

    def with_model(self, model: LoadedModel) -> OnnxScorer:
        """A scorer that also serves ``model`` (replacing a loaded one with the same ``name@version``)."""
        warm_up(model)
        return OnnxScorer._of([*(m for r, m in self._models.items() if r != model.card.ref), model])

    def without(self, ref: str) -> OnnxScorer:
        return OnnxScorer._of(m for r, m in self._models.items() if r != ref)

    def model(self, ref: str) -> LoadedModel | None:
        return self._models.get(ref)

    def models(self) -> list[LoadedModel]:
        return list(self._models.values())

    def infer(self, card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
        model = self._models.get(card.ref)
        if model is None:
            raise ScoringError(f"{card.ref} is not loaded")
        try:
            values = model.session.run(None, {card.input: matrix})
        except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidArgument, ...)
            raise ScoringError(f"{card.ref}: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}") from None
        return {name: np.asarray(value) for name, value in zip(model.output_names, values, strict=True)}
