"""The concept-drift and prequential gauges, an observer of ``services.concept_drift`` on the worker's registry.

Every worker exports the same shared figures (read from Redis at each look, whichever worker decided): aggregate
with ``max``, not ``sum``. A version's gauges appear at its first look and keep their last values while Redis is
down. The model event and the Redis errors go to ``WorkerMetrics`` (``streamer_model_events_total``,
``streamer_redis_errors_total``), which this observer wraps.
"""

from __future__ import annotations

from prometheus_client import Gauge

from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.core.label_monitor import LabelMonitor

LABELS = ["model", "version"]


class ConceptDriftMetrics:
    def __init__(self, metrics: WorkerMetrics) -> None:
        r = metrics.registry
        self._metrics = metrics
        self.detections = Gauge(
            "streamer_concept_drift_detections",
            "Changes of a version's error rate detected on its 0/1 error stream since it was first served, all "
            "workers (shared in Redis; the detector of its card's [concept_drift], ADWIN by default), by direction: "
            "rise (a concept drift) or fall (a recovery).",
            [*LABELS, "direction"],
            registry=r,
        )
        self.error_rate = Gauge(
            "streamer_concept_drift_error_rate",
            "The detector's current estimate of the version's error rate (ADWIN: the mean of its adaptive window).",
            LABELS,
            registry=r,
        )
        self.last_detection = Gauge(
            "streamer_concept_drift_last_detection_label",
            "Position in the version's label stream of the last detection (-1: none yet).",
            LABELS,
            registry=r,
        )
        self.adaptations = Gauge(
            "streamer_concept_drift_adaptations",
            "Adaptations of an [online] learner on a detection (online.on_drift: restart or reset-rates).",
            LABELS,
            registry=r,
        )
        self.labels = Gauge(
            "streamer_prequential_labels",
            "Labels of the version's stream that the prequential metrics and the detector have seen, all workers.",
            LABELS,
            registry=r,
        )
        self.accuracy = Gauge(
            "streamer_prequential_accuracy",
            "Progressive-validation accuracy: every label scores the prediction served before the model learnt "
            "from it, over all labels of the version (0-1).",
            LABELS,
            registry=r,
        )
        self.log_loss = Gauge(
            "streamer_prequential_log_loss",
            "Progressive-validation mean log loss over all labels of the version (nats per label).",
            LABELS,
            registry=r,
        )

    def on_concept_drift(self, model: str, version: str, monitor: LabelMonitor) -> None:
        state = monitor.state
        self.detections.labels(model, version, "rise").set(state.rises)
        self.detections.labels(model, version, "fall").set(state.detections - state.rises)
        self.last_detection.labels(model, version).set(state.last_detection)
        self.adaptations.labels(model, version).set(state.adaptations)
        self.labels.labels(model, version).set(state.position)
        for gauge, value in (
            (self.error_rate, monitor.error_rate),
            (self.accuracy, monitor.accuracy),
            (self.log_loss, monitor.log_loss),
        ):
            if value == value:  # NaN (no label yet) keeps the gauge's last value
                gauge.labels(model, version).set(value)

    def on_redis_error(self, operation: str) -> None:
        self._metrics.on_redis_error(operation)
