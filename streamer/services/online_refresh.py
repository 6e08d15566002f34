"""Online models at bounded staleness: every ``online.refresh_ms`` each worker reloads an online model's shared
weights from Redis and, when they changed, builds the ONNX graph of the current weights and swaps it into the
serving model set. Scoring never waits for Redis, and a batch is scored entirely by one set of weights. If
Redis is unreachable the last weights keep serving; ``streamer_online_weights_age_seconds`` shows how stale
they are.

Online versions are added at start and by hot reload alike (``add``): each is registered with the store, which
seeds the shared state from the version's file unless another worker already did. A version that cannot be
registered yet (Redis down) serves its shipped weights and is registered at a later refresh. A version no
longer in the serving set (removed from the repository) is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from streamer.adapters import online as online_models
from streamer.adapters.online import OnlineModel
from streamer.adapters.onnx_models import LoadedModel
from streamer.core.errors import StateStoreError
from streamer.core.state import StateStore
from streamer.services.runner import Background, Service
from streamer.serving import ServingModels

log = logging.getLogger(__name__)


class OnlineRefresher(Background):
    def __init__(
        self,
        store: StateStore,
        serving: ServingModels,
        observer: Any,
        refresh_s: float,
        intra_op_num_threads: int = 1,
    ) -> None:
        self._store, self._serving, self._observer = store, serving, observer
        self._threads = intra_op_num_threads
        self._lock = threading.Lock()
        self.models: list[OnlineModel] = []
        self._unregistered: list[LoadedModel] = []
        self.service = Service("online-refresh", self._step, interval_s=refresh_s)

    def add(self, model: LoadedModel) -> None:
        """Learn and serve the shared weights of ``model`` (at start, or dropped in while running)."""
        with self._lock:
            self._unregistered.append(model)
        self._register()

    def _register(self) -> None:
        with self._lock:
            waiting, self._unregistered = self._unregistered, []
        for model in waiting:
            try:
                [registered] = online_models.register(self._store, [model])
            except StateStoreError as exc:  # Redis down: serve the shipped weights, register at a later refresh
                self._observer.on_redis_error("online_register")
                if not exc.retriable:
                    with self._lock:
                        self._unregistered.append(model)
                    raise  # not an outage: the service stops and reports it (runner.py)
                log.warning("cannot register online model %s in Redis yet (%s)", model.card.ref, exc)
                with self._lock:
                    self._unregistered.append(model)
                continue
            with self._lock:
                self.models = [m for m in self.models if m.card.ref != model.card.ref] + [registered]

    def start(self) -> None:
        self.refresh_once()
        self.service.start()

    def _step(self) -> bool:
        self.refresh_once()
        return False

    def refresh_once(self) -> None:
        if self._unregistered:
            self._register()
        now = time.monotonic()
        scorer = self._serving.current.scorer
        with self._lock:
            self.models = [m for m in self.models if scorer.model(m.card.ref) is not None]
            models = list(self.models)
        for online in models:
            name, version = online.card.name, str(online.card.version)
            try:
                shared = self._store.online_weights(name, version)
            except StateStoreError as exc:  # Redis down: keep serving the last weights; the age gauge grows
                self._observer.on_redis_error("online_refresh")
                if not exc.retriable:
                    raise  # not an outage: the service stops and reports it (runner.py)
                log.debug("cannot refresh %s (%s)", online.card.ref, exc)
                shared = None
            else:
                online.refreshed = now
            if shared is not None and shared.generation != (online.updates, online.adaptations):
                self._serving.replace_session(
                    online_models.with_weights(online.model, online.spec, shared, self._threads)
                )
                online.updates, online.adaptations = shared.generation
                self._observer.on_online_weights(name, version, shared.updates, now - online.refreshed)
            else:
                self._observer.on_online_weights(name, version, None, now - online.refreshed)
