"""Online models at bounded staleness: every ``online.refresh_ms`` each worker reloads an online model's shared
weights from Redis and, when they changed, builds the ONNX graph of the current weights and swaps it into the
scorer. Scoring never waits for Redis, and a batch is scored entirely by one set of weights. If Redis is
unreachable the last weights keep serving; ``streamer_online_weights_age_seconds`` shows how stale they are.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import onnxruntime as ort

from streamer.adapters.model_repository import LoadedModel, session_options
from streamer.adapters.online import OnlineModel, weights_of
from streamer.adapters.onnx_logistic import build_logistic
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.redis_state import RedisStateStore
from streamer.services.runner import Background, Service

log = logging.getLogger(__name__)


class OnlineRefresher(Background):
    def __init__(
        self,
        store: RedisStateStore,
        models: list[OnlineModel],
        scorer: OnnxScorer,
        observer: Any,
        refresh_s: float,
        intra_op_num_threads: int = 1,
    ) -> None:
        self._store, self.models, self._scorer, self._observer = store, models, scorer, observer
        self._threads = intra_op_num_threads
        self.service = Service("online-refresh", self._step, interval_s=refresh_s)

    def start(self) -> None:
        self.refresh_once()
        self.service.start()

    def _step(self) -> bool:
        self.refresh_once()
        return False

    def refresh_once(self) -> None:
        now = time.monotonic()
        for online in self.models:
            name, version = online.card.name, str(online.card.version)
            try:
                shared = self._store.online_weights(name, version)
            except Exception as exc:  # Redis down: keep serving the last weights; the age gauge grows
                self._observer.on_redis_error("online_refresh")
                log.debug("cannot refresh %s (%s)", online.card.ref, exc)
                shared = None
            else:
                online.refreshed = now
            if shared is not None and shared.updates != online.updates:
                data = build_logistic(online.card, weights_of(online.spec, shared))
                session = ort.InferenceSession(
                    data, sess_options=session_options(self._threads), providers=["CPUExecutionProvider"]
                )
                model = online.model
                self._scorer.add(LoadedModel(model.card, model.path, session, model.output_names))
                online.updates = shared.updates
                self._observer.on_online_weights(name, version, shared.updates, now - online.refreshed)
            else:
                self._observer.on_online_weights(name, version, None, now - online.refreshed)
