"""Concept drift, watched from every worker and decided once: the label stream of each version through its
monitor (``core.label_monitor``), the detections as events, and the adaptation of ``[online]`` learners.

Every ``interval_s``, for each loaded binary-classification version whose card does not turn detection off:
1. read the version's monitor, its pending label-stream chunks and its shared FTRL state (one round trip);
2. feed the chunks to the monitor (prequential metrics, detector); for an ``[online]`` version with
   ``on_drift`` other than ``none``, a detection of a higher error rate adapts the learner (a lower one is a
   recovery, reported only) (``learner.adapted``: a restart relearns
   the labels since the detection from the stream's features, so the result is the same whenever the decider
   looks);
3. write it all back by compare-and-set (``RedisDriftStore.advance``): one worker's write wins, the others read
   the new state at their next look -- one decider per version at a time, every worker following. The winner
   emits the ``concept-drift`` model event with its figures and counts the detection;
4. every worker exports the shared figures (``streamer_concept_drift_*``, ``streamer_prequential_*``), and serves
   the adapted weights at its next online refresh (the refresher reloads when ``adaptations`` changes).

A frozen version with a ``[calibration]`` stage (``core.calibration``) is learnt here rather than in Redis: the
decider scores the stream's rows with the frozen model, learns the stage from them (adapting it on a rise as an
online learner is), and writes the stage's state with the monitor; every worker serves the frozen graph behind
the stage's current weights (``adapters.onnx_calibration``) from its next look on.
Redis down: nothing is decided, the error is counted, the next look catches up (the stream waits in Redis).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.adapters.onnx_calibration import Calibrated
from streamer.adapters.onnx_models import LoadedModel
from streamer.adapters.prometheus_drift import ConceptDriftMetrics
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.adapters.redis_drift import Pending, RedisDriftStore
from streamer.adapters.redis_state import RedisStateStore
from streamer.core import calibration, learner
from streamer.core.cards import ModelCard
from streamer.core.errors import ModelError, StateStoreError
from streamer.core.label_monitor import Detection, LabelMonitor
from streamer.core.routing import Catalog
from streamer.core.state import OnlineSpec, OnlineWeights
from streamer.services.runner import Background, Service
from streamer.serving import ServingModels

log = logging.getLogger(__name__)

ATTEMPTS = 3  # compare-and-set attempts per look when labels keep arriving during an adaptation


class ConceptDriftWatch(Background):
    def __init__(
        self,
        store: RedisDriftStore,
        catalog: Callable[[], Catalog],
        online: Callable[[], dict[str, OnlineSpec]],
        emit: Callable[..., Any],
        observer: Any,
        interval_s: float = 1.0,
        *,
        model: Callable[[str], LoadedModel | None] = lambda ref: None,
        replace: Callable[[LoadedModel], Any] = lambda model: None,
        threads: int = 1,
    ) -> None:
        """``model`` finds a served version by ref and ``replace`` serves a new session of one (the serving set's
        ``scorer.model`` and ``replace_session``): what a calibrated version needs."""
        self._store, self._catalog, self._online = store, catalog, online
        self._emit, self._observer = emit, observer
        self._model, self._replace, self._threads = model, replace, threads
        self._calibrations: dict[str, Calibrated] = {}
        self.service = Service("concept-drift", self._step, interval_s=interval_s)

    def _step(self) -> bool:
        self.check_once()
        return False

    def check_once(self) -> list[Detection]:
        """One look at every watched version; the detections this worker decided."""
        decided: list[Detection] = []
        online = self._online()
        for versions in self._catalog().cards.values():
            for card in versions.values():
                if card.task != "binary-classification" or card.concept_drift.kind == "none":
                    continue
                try:
                    decided += self.check(card, online.get(f"{card.name}:{card.version}"))
                except StateStoreError as exc:  # Redis down: decide later, the stream waits in Redis
                    self._observer.on_redis_error("concept_drift")
                    log.debug("concept-drift check of %s failed: %s", card.ref, exc)
                    return decided
        return decided

    def check(self, card: ModelCard, spec: OnlineSpec | None) -> list[Detection]:
        name, version = card.name, str(card.version)
        calibrated = self._calibrated(card)
        learner_kind = "calibration" if calibrated is not None else "online"
        for _ in range(ATTEMPTS):
            pending = self._store.read(name, version, learner_kind)
            monitor = LabelMonitor.decode(card.concept_drift, pending.monitor)
            if not pending.chunks:  # nothing new: follow the shared state
                self._observer.on_concept_drift(name, version, monitor)
                self._serve(calibrated, pending.online)
                return []
            if calibrated is not None:
                found, state, adapted = self._calibrate(calibrated, monitor, pending)
            else:
                found, state = self._feed(card, spec, monitor, pending)
                adapted = state is not None
            if adapted:
                monitor.state.adaptations += 1
            written = self._store.advance(
                name, version, pending, monitor.encode(), state, learner=learner_kind, adapted=adapted
            )
            if written:
                self._observer.on_concept_drift(name, version, monitor)
                self._serve(calibrated, state)
                for detection in found:
                    self._report(card, monitor, detection, adapted)
                return found
        return []  # labels kept arriving or another worker decided: its state arrives with the next look

    def _calibrated(self, card: ModelCard) -> Calibrated | None:
        """The frozen model of a version with a ``[calibration]`` stage (kept from its first look: the scorer
        then serves the frozen graph, later the calibrated one)."""
        if card.calibration is None:
            return None
        calibrated = self._calibrations.get(card.ref)
        if calibrated is None or calibrated.model.card != card:
            model = self._model(card.ref)
            if model is None:
                return None
            calibrated = Calibrated(model, self._threads)
            self._calibrations[card.ref] = calibrated
        return calibrated

    def _calibrate(
        self, calibrated: Calibrated, monitor: LabelMonitor, pending: Pending
    ) -> tuple[list[Detection], OnlineWeights, bool]:
        """Feed the chunks to the monitor and the stage; the stage's new state and whether a rise adapted it."""
        spec = calibrated.spec
        shared = pending.online
        state = calibration.initial(spec)
        if shared is not None and shared.z.shape == state.z.shape:
            state = learner.FtrlState(shared.z, shared.n, state.mean, state.scale, spec.params, shared.updates)
        found: list[Detection] = []
        adapted = False
        start = monitor.labels
        frozen, rows, labels = [], [], []
        for chunk in pending.chunks:
            found += monitor.learn_many(chunk.scores, chunk.labels, chunk.threshold)
            if chunk.features is None:
                continue  # predictions logged without features (by a worker before this version): evaluated only
            p = calibrated.frozen_scores(chunk.features)
            state = calibration.learn_many(state, p, chunk.features, chunk.labels, spec)
            frozen.append(p)
            rows.append(chunk.features)
            labels.append(chunk.labels)
        rises = [d for d in found if d.rising]
        complete = sum(len(y) for y in labels) == monitor.labels - start
        if rises and spec.on_drift != "none" and complete:
            since = rises[-1].position + 1 - start
            p, x, y = (np.concatenate(v)[since:] for v in (frozen, rows, labels))
            state = learner.restart(state) if spec.on_drift == "restart" else learner.reset_rates(state)
            if spec.on_drift == "restart" and len(y):
                state = calibration.learn_many(state, p, x, y, spec)
            adapted = True
        updates = (shared.updates if shared is not None else 0) + sum(len(y) for y in labels)
        adaptations = (shared.adaptations if shared is not None else 0) + int(adapted)
        return found, OnlineWeights(state.z, state.n, updates, adaptations), adapted

    def _serve(self, calibrated: Calibrated | None, shared: OnlineWeights | None) -> None:
        """Serve a calibrated version's shared stage when it changed (every worker, decider or follower)."""
        if calibrated is None or shared is None or shared.generation == calibrated.generation:
            return
        try:
            self._replace(calibrated.serving(shared))
        except ModelError as exc:
            log.error("%s", exc)
        calibrated.generation = shared.generation

    def _feed(
        self, card: ModelCard, spec: OnlineSpec | None, monitor: LabelMonitor, pending: Pending
    ) -> tuple[list[Detection], OnlineWeights | None]:
        found: list[Detection] = []
        rows: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        start = monitor.labels
        for chunk in pending.chunks:
            found += monitor.learn_many(chunk.scores, chunk.labels, chunk.threshold)
            if chunk.features is not None:
                rows.append(chunk.features)
                labels.append(chunk.labels)
        adapt = card.online is not None and card.on_drift != "none" and spec is not None
        rises = [d for d in found if d.rising]
        if not rises or not adapt or pending.online is None:
            return found, None
        shared = pending.online
        if shared.z.shape != (len(spec.mean) + 1,) or sum(len(y) for y in labels) != monitor.labels - start:
            log.warning("concept drift on %s: not adapting (the label stream lacks features)", card.ref)
            return found, None
        since = rises[-1].position + 1 - start  # relearn what came after the last rise
        x = np.concatenate(rows)[since:] if rows else np.empty((0, len(spec.mean)))
        y = (np.concatenate(labels)[since:] >= 0.5).astype(np.float64) if labels else np.empty(0)
        state = learner.FtrlState(shared.z, shared.n, spec.mean, spec.scale, spec.params, shared.updates)
        after = learner.adapted(state, card.on_drift, x, y)
        return found, OnlineWeights(after.z, after.n, shared.updates, shared.adaptations + 1)

    def _report(self, card: ModelCard, monitor: LabelMonitor, detection: Detection, adapted: bool) -> None:
        action = card.on_drift if adapted and detection.rising else "none"
        log.warning(
            "concept drift on %s at label %s: error rate %.3f -> %.3f (%s)",
            card.ref,
            detection.position,
            detection.error_rate_before,
            detection.error_rate_after,
            action,
        )
        self._emit(
            "concept-drift",
            card.name,
            str(card.version),
            detector=card.concept_drift.kind,
            label=detection.position,
            error_rate_before=round(detection.error_rate_before, 4),
            error_rate_after=round(detection.error_rate_after, 4),
            direction="rise" if detection.rising else "fall",
            prequential_accuracy=round(monitor.accuracy, 4),
            labels=monitor.labels,
            detections=monitor.state.detections,
            action=action,
        )


def start_watch(
    store: RedisStateStore,
    serving: ServingModels,
    emit: Callable[..., Any],
    metrics: WorkerMetrics,
    interval_s: float,
    threads: int = 1,
) -> ConceptDriftWatch:
    """The worker's concept-drift watch on the state store's Redis, started: the one call the wiring makes."""
    watch = ConceptDriftWatch(
        RedisDriftStore(store.client, store.prefix),
        lambda: serving.current.catalog,
        lambda: dict(store.online),
        emit,
        ConceptDriftMetrics(metrics),
        interval_s,
        model=lambda ref: serving.current.scorer.model(ref),
        replace=serving.replace_session,
        threads=threads,
    )
    watch.start()
    return watch
