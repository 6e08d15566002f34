"""The models a worker serves right now: one immutable ``ModelSet`` (catalog + sessions), swapped whole.

Every batch reads ``ServingModels.current`` once and is routed, scored and stamped with that set only, so a
hot reload, an online refresh or a promotion takes effect *between* batches: no request is scored by a
half-loaded model or by two policies, and each output names the version that scored it. Writers (the model
watcher, the online refresher, the control channel) build the next set under a lock and publish it with one
attribute assignment, which Python makes atomic for readers on any thread. Listeners hear about every change
(metrics, drift counts) on the writer's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.adapters.onnx_models import LoadedModel
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.core.cards import ModelCard
from streamer.core.graph.execution import Lookup, no_lookup
from streamer.core.routing import Catalog, Serving
from streamer.core.scorer import Scorer
from streamer.core.scoring import Limits, ScoredBatch, score_records
from streamer.core.types import Records

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSet(Scorer):
    catalog: Catalog
    scorer: OnnxScorer

    def infer(self, card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return self.scorer.infer(card, matrix)

    def serving(self) -> list[tuple[str, int, bool]]:
        """(name, version, is the champion) of every loaded version."""
        catalog = self.catalog
        return [
            (name, version, catalog.serving_version(name) == version)
            for name, versions in catalog.cards.items()
            for version in versions
        ]

    def shares(self) -> list[tuple[str, int, str, float]]:
        """(name, version, role, share of keys) of what serves traffic: champion, canary and shadow."""
        catalog, shares = self.catalog, []
        for name, versions in catalog.cards.items():
            split = catalog.split(name)
            champion = catalog.serving_version(name)
            if split is None:
                shares.append((name, champion, "champion", 1.0))
            else:
                lows = (0.0, *split.bounds)
                highs = (*split.bounds, 1.0)
                for card, low, high in zip(split.cards, lows, highs, strict=True):
                    role = "champion" if card.version == champion else "canary"
                    shares.append((name, card.version, role, high - low))
            challenger = catalog.shadow_of(versions[champion])  # type: ignore[index]
            if challenger is not None:
                shares.append((name, challenger.version, "shadow", 1.0))
        return shares


def cards_of(models: list[LoadedModel]) -> dict[str, dict[int, ModelCard]]:
    cards: dict[str, dict[int, ModelCard]] = {}
    for model in sorted(models, key=lambda m: (m.card.name, m.card.version)):
        cards.setdefault(model.card.name, {})[model.card.version] = model.card
    return cards


Listener = Callable[[ModelSet, ModelSet], None]


class ServingModels:
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

    def batch_scorer(
        self,
        limits: Limits,
        on_inference: Callable[[str, str, float], None],
        lookup: Lookup = no_lookup,
        observe_matrix: Callable[[ModelCard, np.ndarray], None] | None = None,
    ) -> Callable[[Records], ScoredBatch]:
        """The scoring function of both serving modes (the stream's batches and on-demand requests): one batch,
        one model set, read once, so that a swap between batches never splits a batch; each ONNX call's time
        goes to ``on_inference(model, version, seconds)``."""

        def score(records: Records) -> ScoredBatch:
            models = self.current

            def infer(card: ModelCard, matrix: Any) -> Any:
                started = time.perf_counter()
                try:
                    return models.infer(card, matrix)
                finally:
                    on_inference(card.name, str(card.version), time.perf_counter() - started)

            return score_records(
                records,
                models.catalog,
                infer,
                limits,
                observe_matrix=observe_matrix,
                lookup=lookup,
                clock=time.perf_counter,
            )

        return score

    def set_serving(self, serving: Mapping[str, Serving]) -> ModelSet:
        return self._publish(lambda models: ModelSet(models.catalog.with_serving(serving), models.scorer))
