"""What a worker runs beside scoring, and what it needs from the scoring path: ``wire_learning``.

Always: feature-drift counts (the scoring path's ``observe_matrix``), the quality monitor and its model-events
producer. With Redis: the prediction log (an observer of released predictions), the label consumer, the shared
rolling evaluation and accuracy floor, online models learning in Redis at bounded staleness, concept drift on
the label stream (``services.concept_drift``), and label-driven rollouts (which write the control channel that
every mode follows: ``wiring.serving_state``). Without Redis, online models serve their shipped weights (logged)
and no labels are consumed.

The result is one typed value: the pipeline's observer, the drift counts, the events, and what was started,
which ``stop`` stops. It is also the worker's listener of the model repository (``loaded``, ``refused``,
``removed``): a version dropped in is counted for drift, learns if it is online, and is an event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer

from streamer.adapters.kafka_admin import client_config
from streamer.adapters.model_repository import ScanResult
from streamer.adapters.onnx_models import LoadedModel
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.adapters.redis_state import RedisStateStore
from streamer.config import Settings
from streamer.core.errors import ModelError
from streamer.core.evaluation import parse_windows
from streamer.observers import FanOut, PipelineObserver
from streamer.services.concept_drift import start_watch
from streamer.services.label_consumer import LabelConsumer
from streamer.services.online_refresh import OnlineRefresher
from streamer.services.prediction_log import PredictionLog
from streamer.services.quality_monitor import DriftCounts, ModelEvents, QualityMonitor
from streamer.services.rollout import Rollouts
from streamer.services.runner import Stoppable
from streamer.services.serving_control import ServingControl
from streamer.serving import ServingModels

log = logging.getLogger(__name__)

EVENTS_FLUSH_S = 5


def state_store(settings: Settings) -> RedisStateStore | None:
    """The shared state (labels, evaluation, online weights, the control channel), or None without Redis."""
    if not settings.redis.url:
        return None
    return RedisStateStore.from_settings(settings.redis, windows=parse_windows(settings.evaluation.windows))


@dataclass(slots=True)
class Learning:
    """The learning side of one worker, wired and started."""

    observer: PipelineObserver | FanOut
    drift: DriftCounts
    events: ModelEvents
    serving: ServingModels
    metrics: WorkerMetrics
    events_producer: Producer
    refresher: OnlineRefresher | None = None
    started: list[Stoppable] = field(default_factory=list)

    def loaded(self, model: LoadedModel) -> None:
        card = model.card
        self.drift.add(card)
        if card.online is not None and self.refresher is not None:
            self.refresher.add(model)
        self.events.emit("model-loaded", card.name, str(card.version), path=str(model.path.parent))

    def refused(self, path: Path, error: ModelError) -> None:
        self.events.emit("model-refused", path.parent.name, path.name, reason=str(error), path=str(path))

    def removed(self, ref: str) -> None:
        name, _, version = ref.partition("@")
        serving = self.serving.current.catalog.serving_version(name)
        self.events.emit("model-removed", name, version, now_serving=serving)

    def stop(self) -> None:
        for service in self.started:
            service.stop()
        self.events_producer.flush(EVENTS_FLUSH_S)


def wire_learning(
    settings: Settings,
    bootstrap: str,
    serving: ServingModels,
    scan: ScanResult,
    metrics: WorkerMetrics,
    store: RedisStateStore | None,
    control: ServingControl | None,
) -> Learning:
    """Build and start the learning side; ``control`` is the worker's following of the control channel (a
    rollout applies its own decision through it at once)."""
    producer = Producer(client_config(bootstrap, settings.kafka.client, **{"linger.ms": 5}))
    drift = DriftCounts(scan.cards())
    events = ModelEvents(producer, settings.topics.model_events, store, metrics, settings.worker.worker_id())
    learning = Learning(metrics, drift, events, serving, metrics, producer)
    online = [m for versions in scan.loaded.values() for m in versions.values() if m.card.online is not None]
    if store is not None:
        _start_redis_side(learning, settings, bootstrap, store, control, online)
    elif online:
        log.warning(
            "online model(s) %s serve their shipped weights: no Redis configured, so nothing is learnt",
            ", ".join(m.card.ref for m in online),
        )
    monitor = QualityMonitor(settings.evaluation, lambda: serving.current.catalog, store, drift, events, metrics)
    monitor.start()
    learning.started.append(monitor)
    return learning


def _start_redis_side(
    learning: Learning,
    settings: Settings,
    bootstrap: str,
    store: RedisStateStore,
    control: ServingControl | None,
    online: list[LoadedModel],
) -> None:
    serving, metrics = learning.serving, learning.metrics
    if control is not None and any(policy.enabled for policy in settings.rollout.values()):
        channel = control.channel
        rollouts = Rollouts(
            channel,
            store,
            serving,
            settings.rollout,
            learning.events.emit,
            control.apply_once,
            metrics,
            settings.evaluation.check_interval_s,
        )
        rollouts.start()
        learning.started.append(rollouts)
    refresher = OnlineRefresher(
        store, serving, metrics, settings.online.refresh_ms / 1000.0, settings.worker.intra_op_num_threads
    )
    for model in online:
        refresher.add(model)
    refresher.start()
    learning.refresher = refresher
    learning.started.append(refresher)
    prediction_log = PredictionLog(store, metrics, settings.redis.max_queued_predictions)
    prediction_log.start()
    labels = LabelConsumer(
        bootstrap,
        settings.kafka.client,
        settings.worker.group_id,
        settings.topics.feedback,
        settings.topics.dlq,
        store,
        metrics,
        prediction_log,
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
    )
    labels.start()
    learning.started += [labels, prediction_log]
    learning.observer = FanOut(metrics, prediction_log)
    # concept drift on the label stream and prequential metrics, shared by all workers through Redis
    interval_s, threads = settings.evaluation.check_interval_s, settings.worker.intra_op_num_threads
    learning.started.append(start_watch(store, serving, learning.events.emit, metrics, interval_s, threads))
