"""The models a worker serves right now: one immutable ``ModelSet`` (catalog + sessions), swapped whole.

Every batch reads ``ServingModels.current`` once and is routed, scored and stamped with that set only, so a
hot reload, an online refresh or a promotion takes effect *between* batches: no request is scored by a
half-loaded model or by two policies, and each output names the version that scored it. Writers (the model
watcher, the online refresher, the control channel) build the next set under a lock and publish it with one
attribute assignment, which Python makes atomic for readers on any thread. Listeners hear about every change
(metrics, drift counts) on the writer's thread.

This module holds only the holder: what a set serves (champion, shares) is the catalog's to say
(``core.routing``), and the scoring function over the holder is wired in ``wiring.models.batch_scorer``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from streamer.adapters.onnx_models import LoadedModel
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.core.cards import ModelCard
from streamer.core.routing import Catalog, Serving
from streamer.core.scorer import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSet(Scorer):
    """One consistent set: the catalog that routes and the sessions that score, published together."""

    catalog: Catalog
    scorer: OnnxScorer

    def infer(self, card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return self.scorer.infer(card, matrix)


def cards_of(models: list[LoadedModel]) -> dict[str, dict[int, ModelCard]]:
    cards: dict[str, dict[int, ModelCard]] = {}
    for model in sorted(models, key=lambda m: (m.card.name, m.card.version)):
        cards.setdefault(model.card.name, {})[model.card.version] = model.card
    return cards


Listener = Callable[[ModelSet, ModelSet], None]


class ServingModels:
    """The holder of the current ``ModelSet``: readers take ``current`` once per batch; writers swap a new set
    under the lock and then tell the listeners (before, after)."""

    def __init__(self, initial: ModelSet) -> None:
        self.current = initial
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _publish(self, build: Callable[[ModelSet], ModelSet]) -> ModelSet:
        with self._lock:
            before = self.current
            after = build(before)
            self.current = after
        for listener in self._listeners:
            try:
                listener(before, after)
            except Exception:
                log.exception("a model-set listener failed")
        return after

    def add(self, model: LoadedModel) -> ModelSet:
        """Serve ``model`` beside the others (or instead of the same ``name@version``); the session is warmed
        up before the new set is published."""

        def build(models: ModelSet) -> ModelSet:
            scorer = models.scorer.with_model(model)
            return ModelSet(models.catalog.with_cards(cards_of(scorer.models())), scorer)

        return self._publish(build)

    def replace_session(self, model: LoadedModel) -> ModelSet:
        """New weights for a loaded version (online refresh): the catalog is unchanged."""

        def build(models: ModelSet) -> ModelSet:
            if models.scorer.model(model.card.ref) is None:
                return models  # removed meanwhile: not brought back
            return ModelSet(models.catalog, models.scorer.with_model(model))

        return self._publish(build)

    def remove(self, ref: str) -> ModelSet:
        def build(models: ModelSet) -> ModelSet:
            scorer = models.scorer.without(ref)
            return ModelSet(models.catalog.with_cards(cards_of(scorer.models())), scorer)

        return self._publish(build)

    def set_serving(self, serving: Mapping[str, Serving]) -> ModelSet:
        return self._publish(lambda models: ModelSet(models.catalog.with_serving(serving), models.scorer))
