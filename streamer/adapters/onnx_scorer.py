"""ONNX Runtime inference for the scoring graph: sessions warmed up at load, called from a thread pool.

``OnnxScorer.infer`` is the ``Infer`` the core's graph calls. ``InferenceSession.run`` releases the GIL and
is safe to call from several threads at once, so the worker runs whole batches on a small thread pool while
its event loop keeps consuming. Runtime failures become ``ScoringError`` (the rows of that batch and model are
dead-lettered as ``scoring-failed``); the row count check lives in the graph.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from streamer.adapters.model_repository import LoadedModel
from streamer.core.cards import ModelCard
from streamer.core.errors import ScoringError

log = logging.getLogger(__name__)


class OnnxScorer:
    def __init__(self, models: Mapping[str, Mapping[int, LoadedModel]]) -> None:
        self._models: dict[str, LoadedModel] = {}
        for versions in models.values():
            for model in versions.values():
                self.add(model)

    def add(self, model: LoadedModel) -> None:
        """Serve ``model`` after a warm-up run (the first run of a session allocates; keep that off the path)."""
        warm = np.zeros((1, len(model.card.features)), dtype=np.float32)
        model.session.run(None, {model.card.input: warm})
        self._models[model.card.ref] = model

    def infer(self, card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
        model = self._models.get(card.ref)
        if model is None:
            raise ScoringError(f"{card.ref} is not loaded")
        try:
            values = model.session.run(None, {card.input: matrix})
        except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidArgument, ...)
            raise ScoringError(f"{card.ref}: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}") from None
        return {name: np.asarray(value) for name, value in zip(model.output_names, values, strict=True)}
