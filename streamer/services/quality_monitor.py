"""Model quality, watched from every worker: rolling metrics, the accuracy floor, feature drift, events.

One thread, every ``check_interval_s``:
- reads the shared rolling evaluation (Redis) of every loaded version and window into one gauge per quantity
  of ``core.evaluation.Metrics`` (``streamer_rolling_labels``, ``_accuracy``, ``_log_loss``, ``_precision``,
  ``_recall``, ``_auc``, ``_rmse``; Redis down: the gauges keep their last values, the error is counted);
- checks the serving version of each model against ``evaluation.accuracy_floor`` in ``floor_window`` (with at
  least ``min_labels`` labels): ``streamer_accuracy_below_floor`` and, on entering or leaving that state, an
  ``accuracy-below-floor`` / ``accuracy-recovered`` event;
- every ``drift_interval_s``, turns the feature counts the scoring path collected (``DriftCounts``) into PSI per
  feature (``streamer_feature_psi``) and emits ``feature-drift`` when one exceeds ``psi_threshold``.

Events go to the model-events topic as JSON keyed by the model name. Redis ``SET NX`` with a quiet period
makes one worker, not all of them, report a condition they all see.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.config import EvaluationSettings
from streamer.core.cards import ModelCard
from streamer.core.drift import FeatureCounts
from streamer.core.errors import StateStoreError
from streamer.core.evaluation import Metrics
from streamer.core.routing import Catalog
from streamer.core.state import StateStore
from streamer.services.runner import Background, Service

log = logging.getLogger(__name__)

EVENT_QUIET_S = 60
ROLLING_QUANTITIES = tuple(f.name for f in dataclasses.fields(Metrics))  # every quantity the evaluation derives


class DriftCounts:
    """Feature bin counts per model version, fed by the scoring path (``observe`` is ``observe_matrix``).

    Matrices are buffered and binned ``bin_every_rows`` at a time: binning costs a few numpy calls per feature
    whatever the row count, so binning each small batch on its own cost more than the batch's scoring (measured
    under the Faust engine, whose batches are small)."""

    def __init__(self, cards: list[ModelCard], bin_every_rows: int = 4096) -> None:
        self._lock = threading.Lock()
        self.counts = {c.ref: FeatureCounts(c.features, c.reference) for c in cards if c.reference}
        self._pending: dict[str, list[np.ndarray]] = {ref: [] for ref in self.counts}
        self._pending_rows: dict[str, int] = dict.fromkeys(self.counts, 0)
        self._bin_every_rows = bin_every_rows

    def add(self, card: ModelCard) -> None:
        """Count a version loaded after start (hot reload)."""
        if card.reference:
            with self._lock:
                self.counts[card.ref] = FeatureCounts(card.features, card.reference)
                self._pending[card.ref], self._pending_rows[card.ref] = [], 0

    def observe(self, card: ModelCard, matrix: np.ndarray) -> None:
        ref = card.ref
        if ref not in self.counts:
            return
        with self._lock:
            self._pending[ref].append(matrix)
            self._pending_rows[ref] += matrix.shape[0]
            if self._pending_rows[ref] >= self._bin_every_rows:
                self._bin(ref)

    def _bin(self, ref: str) -> None:
        pending = self._pending[ref]
        if pending:
            self.counts[ref].add(np.concatenate(pending) if len(pending) > 1 else pending[0])
            self._pending[ref], self._pending_rows[ref] = [], 0

    def take(self, ref: str, min_rows: int) -> tuple[int, dict[str, float]] | None:
        with self._lock:
            self._bin(ref)
            counts = self.counts[ref]
            return counts.take() if counts.rows >= min_rows else None


# Model events that report things going as they should: logged at INFO. Every other kind asks an operator to
# look (a refused version, an accuracy under the floor, a drift, a rollout that rolled back) and is a WARNING.
ROUTINE_EVENTS = frozenset(
    {"model-loaded", "model-removed", "accuracy-recovered", "rollout-champion", "rollout-started", "model-promoted"}
)


def event_level(kind: str, fields: dict[str, Any]) -> int:
    """The log level of a model event: INFO for ``ROUTINE_EVENTS`` and a concept drift's recovery (the error
    rate fell), WARNING for the rest."""
    if kind in ROUTINE_EVENTS or (kind == "concept-drift" and fields.get("direction") == "fall"):
        return logging.INFO
    return logging.WARNING


class ModelEvents:
    """Writes ``model-events`` records, each with this worker's id (``worker.worker_id()``: unique per process)."""

    def __init__(self, producer: Any, topic: str, store: StateStore | None, observer: Any, worker: str) -> None:
        self._producer, self._topic, self._store, self._observer = producer, topic, store, observer
        self._worker = worker

    def emit(self, kind: str, model: str, version: str, **fields: Any) -> bool:
        if self._store is not None:
            try:
                if not self._store.claim_event(kind, model, version, EVENT_QUIET_S):
                    return False
            except StateStoreError as exc:  # Redis down: better a duplicate event than none
                self._observer.on_redis_error("claim_event")
                if not exc.retriable:
                    raise  # not an outage: the service stops and reports it (runner.py)
        event = {"type": kind, "model": model, "version": version, "time": time.time(), "worker": self._worker}
        event.update(fields)
        self._producer.produce(self._topic, json.dumps(event).encode(), model.encode())
        self._producer.poll(0)
        self._observer.on_model_event(kind)
        log.log(event_level(kind, fields), "model event %s: %s", kind, json.dumps(event))
        return True


class QualityMonitor(Background):
    def __init__(
        self,
        settings: EvaluationSettings,
        catalog: Callable[[], Catalog],
        store: StateStore | None,
        drift: DriftCounts,
        events: ModelEvents,
        observer: Any,
    ) -> None:
        self._settings, self._catalog, self._store = settings, catalog, store
        self._drift, self._events, self._observer = drift, events, observer
        self._below: dict[str, bool] = {}
        self._next_drift = time.monotonic() + settings.drift_interval_s
        interval_s = min(settings.check_interval_s, settings.drift_interval_s)
        self.service = Service("quality", self._step, interval_s=interval_s)
        observer.on_accuracy_floor(settings.accuracy_floor)

    def _step(self) -> bool:
        self.check_once()
        return False

    def check_once(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self._store is not None:
            self._rolling(self._store, self._catalog(), now)
        if time.monotonic() >= self._next_drift:
            self._next_drift = time.monotonic() + self._settings.drift_interval_s
            self.check_drift()

    def _rolling(self, store: StateStore, catalog: Catalog, now: float) -> None:
        floor = self._settings
        for name, versions in catalog.cards.items():
            serving = catalog.serving_version(name)
            for version in versions:
                for window in store.windows:
                    try:
                        m = store.metrics(name, str(version), window, now)
                    except StateStoreError as exc:  # Redis down: the gauges keep their last values
                        self._observer.on_redis_error("rolling_metrics")
                        if not exc.retriable:
                            raise  # not an outage: the service stops and reports it (runner.py)
                        return
                    values = {quantity: float(getattr(m, quantity)) for quantity in ROLLING_QUANTITIES}
                    self._observer.on_rolling(name, str(version), window.name, values)
                    if version != serving or window.name != floor.floor_window or floor.accuracy_floor <= 0:
                        continue
                    below = m.count >= floor.min_labels and m.accuracy < floor.accuracy_floor
                    self._observer.on_below_floor(name, str(version), below)
                    ref = f"{name}@{version}"
                    if below != self._below.get(ref, False):
                        self._below[ref] = below
                        self._events.emit(
                            "accuracy-below-floor" if below else "accuracy-recovered",
                            name,
                            str(version),
                            window=window.name,
                            accuracy=m.accuracy,
                            labels=m.count,
                            floor=floor.accuracy_floor,
                        )

    def check_drift(self) -> None:
        for ref in list(self._drift.counts):
            taken = self._drift.take(ref, self._settings.drift_min_rows)
            if taken is None:
                continue
            rows, psi = taken
            name, _, version = ref.partition("@")
            self._observer.on_feature_psi(name, version, psi)
            drifted = {f: round(v, 4) for f, v in psi.items() if v > self._settings.psi_threshold}
            if drifted:
                self._events.emit(
                    "feature-drift", name, version, rows=rows, psi=drifted, threshold=self._settings.psi_threshold
                )
