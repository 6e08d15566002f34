"""Prometheus metrics as observer hooks: the data path and the services call ``on_*``; only this module
touches a metric.

Names are prefixed ``streamer_``, carry their unit (``_seconds``, ``_messages``) and the conventional
``_total`` suffix for counters. Histogram buckets are chosen for milliseconds-scale latencies. Each worker
has its own ``CollectorRegistry`` so tests and several pipelines in one process never collide.

The hooks take whole batches: counts are summed per call, and histograms are filled with ``observe_many``
(one ``searchsorted`` + ``bincount`` per batch instead of one locked ``observe`` per value). Counters whose
label values are known in advance start at 0, so a rate or an alert never meets an absent series: at start
the dead-letter reasons, label outcomes, model-event types, Redis operations and the dead letters of requests
no model was chosen for; per model when a version is loaded (its request outcomes and hot-reload changes, a
challenger's shadow outcomes, an online model's learnt labels); per partition when it is first reported.

The rolling evaluation is one gauge per quantity (``ROLLING``), so that a sum or an average over a metric's
labels means something.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamer.core.errors import DEAD_LETTER_REASONS
from streamer.core.graph.execution import stage_labels
from streamer.core.graph.spec import GraphSpec
from streamer.core.ledger import Batch, Release
from streamer.core.outputs import OutputRecords
from streamer.core.scoring import ScoredBatch, outcome_counts, sent_scores

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST
# streamer_labels_total{outcome}: one per feedback record (services.label_consumer).
# streamer_shadow_predictions_total{outcome}, from the request outcomes of the challenger's pass.
SHADOW_OUTCOMES = {"prediction": "prediction", "dead_letter": "failed"}
# streamer_oip_requests_total{status}: the statuses of an answered inference request start at 0 per version.
OIP_STATUSES = ("200", "400")
# streamer_oip_connections_closed_total{cause}: why the OIP server closed a connection itself (oip.http).
OIP_CONNECTION_CLOSES = ("evicted", "at-capacity")
LABEL_OUTCOMES = ("joined", "unknown", "duplicate", "reread", "dead_letter")
REQUEST_OUTCOMES = ("prediction", "dead_letter")
MODEL_CHANGES = ("loaded", "refused", "removed")
# streamer_model_events_total{type}: what the worker writes to the model-events topic (services.quality_monitor,
# services.rollout, app: hot reload). A test checks this list against the emitting code.
MODEL_EVENT_TYPES = (
    "model-loaded",
    "model-refused",
    "model-removed",
    "accuracy-below-floor",
    "accuracy-recovered",
    "feature-drift",
    "rollout-champion",
    "rollout-started",
    "model-promoted",
    "model-rolled-back",
)
# streamer_redis_errors_total{operation}: every ``on_redis_error`` call site (a test checks the list).
REDIS_OPERATIONS = (
    "log_predictions",
    "apply_labels",
    "control_read",
    "online_register",
    "online_refresh",
    "claim_event",
    "rolling_metrics",
    "rollout",
)
# The rolling evaluation (``core.evaluation.Metrics``), one gauge per quantity: field -> (name, help).
ROLLING = {
    "count": ("streamer_rolling_labels", "Labels joined in the window."),
    "accuracy": ("streamer_rolling_accuracy", "Accuracy at the card's threshold (0-1)."),
    "log_loss": ("streamer_rolling_log_loss", "Mean log loss (nats per label)."),
    "precision": ("streamer_rolling_precision", "Precision at the card's threshold (0-1)."),
    "recall": ("streamer_rolling_recall", "Recall at the card's threshold (0-1)."),
    "auc": ("streamer_rolling_auc", "ROC AUC estimated from score histograms (0-1)."),
    "rmse": ("streamer_rolling_rmse", "Root mean squared error of the score against the label."),
}


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every value, in one pass (same buckets: a value equal to a bound is in it).

    A handful of values go one by one: below ~8 that is cheaper than the fixed cost of the numpy calls."""
    if values.size < 8:
        for value in values.tolist():
            histogram.observe(value)
        return
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for index in np.flatnonzero(counts[: len(bounds)]).tolist():
        histogram._buckets[index].inc(int(counts[index]))
    histogram._sum.inc(float(values.sum()))


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "streamer_requests_total",
            "Requests by model, version and outcome.",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamer_dead_letters_total",
            "Requests written to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "streamer_batch_size_messages", "Messages per scored micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_wait = Histogram(
            "streamer_batch_wait_seconds",
            "Time from a batch's first message to its close.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_scoring = Histogram(
            "streamer_batch_scoring_seconds",
            "Time to decode, build features and run inference for one batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inference = Histogram(
            "streamer_inference_seconds",
            "ONNX Runtime time per model call.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.latency = Histogram(
            "streamer_end_to_end_latency_seconds",
            "From the request's Kafka timestamp to the prediction being produced.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.reorder_depth = Gauge(
            "streamer_reorder_buffer_depth_messages",
            "Requests in flight or waiting behind an earlier one, per partition.",
            ["partition"],
            registry=r,
        )
        self.inflight = Gauge("streamer_inflight_batches", "Batches being scored now.", registry=r)
        self.skipped = Counter(
            "streamer_recovered_skipped_total",
            "Requests whose output was already in the log after a restart or rebalance (not written again).",
            ["partition"],
            registry=r,
        )
        self.lag = Gauge(
            "streamer_consumer_lag_messages",
            "Requests not yet consumed, per partition (high watermark - position). Approximate on the embedded "
            "broker, which reports the last batch's base offset + 1 as the high watermark.",
            ["partition"],
            registry=r,
        )
        self.scores = Histogram(
            "streamer_prediction_score",
            "Distribution of scores produced, per model version (a drift signal that needs no labels).",
            ["model", "version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.labels_predicted = Counter(
            "streamer_predicted_labels_total",
            "Predictions by predicted class, per model version.",
            ["model", "version", "label"],
            registry=r,
        )
        self.labels = Counter(
            "streamer_labels_total",
            "Feedback labels by outcome: joined (applied once), unknown (no such or an expired prediction), "
            "duplicate (id already applied from another feedback record: sent twice), reread (the same feedback "
            "record read again after an uncommitted batch: not applied again), dead_letter (undecodable feedback).",
            ["outcome"],
            registry=r,
        )
        self.rolling = {
            quantity: Gauge(
                name,
                f"{text} Rolling evaluation from joined labels, shared by all workers (Redis), per model version "
                "and window; a window without labels, or a quantity it cannot define, keeps its last value.",
                ["model", "version", "window"],
                registry=r,
            )
            for quantity, (name, text) in ROLLING.items()
        }
        self.online_updates = Counter(
            "streamer_online_updates_total",
            "Labels learnt by online models through this worker's feedback consumer (each label once).",
            ["model", "version"],
            registry=r,
        )
        self.online_shared_updates = Gauge(
            "streamer_online_model_updates",
            "Updates in the shared weights of an online model, all workers together (read from Redis).",
            ["model", "version"],
            registry=r,
        )
        self.online_age = Gauge(
            "streamer_online_weights_age_seconds",
            "Age of the online weights this worker scores with (bounded by online.refresh_ms while Redis answers).",
            ["model", "version"],
            registry=r,
        )
        self.redis_errors = Counter(
            "streamer_redis_errors_total",
            "Failed Redis operations by operation (each is retried or, for the prediction log, queued).",
            ["operation"],
            registry=r,
        )
        self.prediction_log_dropped = Counter(
            "streamer_prediction_log_dropped_total",
            "Predictions never logged for the join because Redis stayed unreachable longer than the bounded queue "
            "holds (their labels will count as unknown).",
            registry=r,
        )
        self.feature_psi = Gauge(
            "streamer_feature_psi",
            "Population stability index of served features against the card's training reference, per worker, "
            "over the last drift interval (above 0.25: a major shift).",
            ["model", "version", "feature"],
            registry=r,
        )
        self.accuracy_floor = Gauge(
            "streamer_accuracy_floor", "The configured accuracy floor (evaluation.accuracy_floor).", registry=r
        )
        self.below_floor = Gauge(
            "streamer_accuracy_below_floor",
            "1 while the serving version's rolling accuracy is under the floor (with enough labels), else 0.",
            ["model", "version"],
            registry=r,
        )
        self.model_events = Counter(
            "streamer_model_events_total", "Events emitted on the model-events topic, by type.", ["type"], registry=r
        )
        self.model_info = Gauge(
            "streamer_model_info",
            "1 for every model version loaded; serving=1 for the one served by default.",
            ["model", "version", "serving"],
            registry=r,
        )
        self.model_share = Gauge(
            "streamer_model_traffic_share",
            "Share of a model's keys each version answers (role champion or canary; they sum to 1 per model).",
            ["model", "version", "role"],
            registry=r,
        )
        self.shadow_share = Gauge(
            "streamer_model_shadow_share",
            "Share of the champion's requests a loaded version also scores in shadow (1: all of them; 0: none). "
            "Not part of streamer_model_traffic_share, which sums to 1: a shadow answers nobody.",
            ["model", "version"],
            registry=r,
        )
        self.model_changes = Counter(
            "streamer_model_changes_total",
            "Hot-reload changes of the model repository: a version loaded, refused (failed validation) or removed.",
            ["model", "change"],
            registry=r,
        )
        self.stage_rows = Counter(
            "streamer_graph_stage_rows_total",
            "Rows each stage of a declared graph ran on (a cascade: <stage>/first and <stage>/then, whose ratio is "
            "the share of rows reaching the second phase).",
            ["graph", "stage"],
            registry=r,
        )
        self.stage_seconds = Counter(
            "streamer_graph_stage_seconds_total",
            "Time spent in each stage of a declared graph (rate() / stage rows = seconds per row).",
            ["graph", "stage"],
            registry=r,
        )
        self.enrichment_misses = Counter(
            "streamer_enrichment_misses_total",
            "Rows an enrichment stage filled with its defaults: key absent, or the feature store unreachable.",
            ["graph", "stage"],
            registry=r,
        )
        self.enrichment_failures = Counter(
            "streamer_enrichment_failures_total",
            "Batches whose enrichment lookup failed (store down or too slow): every row got the defaults.",
            ["graph", "stage"],
            registry=r,
        )
        self.shadow_predictions = Counter(
            "streamer_shadow_predictions_total",
            "Challengers' passes over the champion's requests: outcome=prediction (written to the shadow topic and "
            "logged for evaluation) or failed (the challenger could not score the row; never a dead letter).",
            ["model", "version", "outcome"],
            registry=r,
        )
        # On-demand serving (Open Inference Protocol v2 over HTTP: oip.http, oip.on_demand).
        self.oip_requests = Counter(
            "streamer_oip_requests_total",
            "Open Inference Protocol v2 HTTP requests by model, version served and HTTP status.",
            ["model", "version", "status"],
            registry=r,
        )
        self.oip_latency = Histogram(
            "streamer_oip_request_duration_seconds",
            "Open Inference Protocol v2 HTTP request time, from the request read to the answer written.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.oip_connections_closed = Counter(
            "streamer_oip_connections_closed_total",
            "OIP connections closed to stay within worker.oip_max_connections: cause=evicted (the one idle the "
            "longest, to let a new one in) or at-capacity (a new one refused with a 503: every slot was busy).",
            ["cause"],
            registry=r,
        )
        for cause in OIP_CONNECTION_CLOSES:
            self.oip_connections_closed.labels(cause)
        self.oip_batch_size = Histogram(
            "streamer_oip_batch_size_requests",
            "On-demand requests scored together in one micro-batch (one ONNX call per model version).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )

        for reason in sorted(DEAD_LETTER_REASONS):
            self.dead_letters.labels(reason)
        for outcome in LABEL_OUTCOMES:
            self.labels.labels(outcome)
        for kind in MODEL_EVENT_TYPES:
            self.model_events.labels(kind)
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation)
        self.requests.labels("", "", "dead_letter")  # rows no model was chosen for (undecodable, unknown model)
        self._partitions: set[int] = set()
        self.output_queue_full = Counter(
            "streamer_output_queue_full_total",
            "Times an output found the producer's local queue full (queue.buffering.max.messages) and waited in "
            "the backlog: backpressure from a slow or absent broker; scoring pauses instead of growing memory.",
            registry=r,
        )
        self.stalls = Counter(
            "streamer_stalled_partitions_total",
            "Partitions found holding work without progress past worker.stall_timeout_s (the worker then exits).",
            ["partition"],
            registry=r,
        )
        self.cut_dead_letters = Counter(
            "streamer_dead_letters_cut_total",
            "Dead letters whose value was cut to fit the dead-letter topic (headers carry the original size/sha256).",
            registry=r,
        )

    # data path hooks (``pipeline.PipelineObserver``) -------------------------------------------------------

    def on_scored(self, batches: Sequence[Batch], scored: Sequence[ScoredBatch], scoring_s: float) -> None:
        observe_many(self.batch_size, np.array([len(b.records) for b in batches], dtype=np.float64))
        observe_many(self.batch_wait, np.array([b.wait_s for b in batches], dtype=np.float64))
        self.batch_scoring.observe(scoring_s)
        for batch in scored:
            for stats in batch.stages:
                self.stage_rows.labels(stats.graph, stats.stage).inc(stats.rows)
                self.stage_seconds.labels(stats.graph, stats.stage).inc(stats.seconds)
                if stats.misses:
                    self.enrichment_misses.labels(stats.graph, stats.stage).inc(stats.misses)
                if stats.failed:
                    self.enrichment_failures.labels(stats.graph, stats.stage).inc()

    def on_released(self, release: Release[ScoredBatch], out: OutputRecords) -> None:
        scored, sent = release.result, release.send
        requests, reasons = outcome_counts(scored, sent)
        for (model, version, outcome), count in requests.items():
            self.requests.labels(model, version, outcome).inc(count)
        for reason, count in reasons.items():
            self.dead_letters.labels(reason).inc(count)
        for summary in scored.models:
            name, version = summary.card.name, str(summary.card.version)
            scores, labels = sent_scores(summary, sent)
            observe_many(self.scores.labels(name, version), scores)
            if labels is not None and labels.size:
                for value, count in collections.Counter(labels.tolist()).items():
                    self.labels_predicted.labels(name, version, str(value)).inc(count)
        observe_many(self.latency, np.maximum(out.latencies_ms, 0.0) / 1000.0)
        if scored.shadow is not None:
            shadow_requests, _ = outcome_counts(scored.shadow, sent)
            for (model, version, outcome), count in shadow_requests.items():
                if model:  # rows the challenger never saw (the champion failed them) are not its outcomes
                    self.shadow_predictions.labels(model, version, SHADOW_OUTCOMES[outcome]).inc(count)
        if out.cut:
            self.cut_dead_letters.inc(out.cut)

    def on_skipped(self, partition: int, count: int) -> None:
        self.skipped.labels(str(partition)).inc(count)

    def _partition(self, partition: int) -> None:
        """A partition's counters start at 0 the first time it is reported."""
        if partition not in self._partitions:
            self._partitions.add(partition)
            self.skipped.labels(str(partition))
            self.stalls.labels(str(partition))

    def on_depth(self, partition: int, rows: int) -> None:
        self._partition(partition)
        self.reorder_depth.labels(str(partition)).set(rows)

    def on_inflight(self, jobs: int) -> None:
        self.inflight.set(jobs)

    def on_lag(self, partition: int, messages: int) -> None:
        self._partition(partition)
        self.lag.labels(str(partition)).set(messages)

    def on_stalled(self, partition: int, seconds: float) -> None:
        self.stalls.labels(str(partition)).inc()

    def on_inference(self, model: str, version: str, seconds: float) -> None:
        self.inference.labels(model, version).observe(seconds)

    # service hooks --------------------------------------------------------------------------------------

    def on_models(
        self,
        versions: Sequence[tuple[str, int, bool]],
        shares: Sequence[tuple[str, int, str, float]] = (),
        graphs: Iterable[GraphSpec] = (),
    ) -> None:
        """(name, version, serving) of every loaded version, and (name, version, role, share) of what serves
        traffic; replaces what was exported before (hot reload removes versions). The counters of a loaded
        version (request outcomes, hot-reload changes, a challenger's shadow outcomes) start at 0; they are
        never removed (a counter that vanished and came back would read as a reset)."""
        self.model_info.clear()
        for name, version, serving in versions:
            self.model_info.labels(name, str(version), "1" if serving else "0").set(1)
            for outcome in REQUEST_OUTCOMES:
                self.requests.labels(name, str(version), outcome)
            for change in MODEL_CHANGES:
                self.model_changes.labels(name, change)
            for status in OIP_STATUSES:
                self.oip_requests.labels(name, str(version), status)
            self.oip_latency.labels(name)
        for graph in graphs:  # a declared graph's stage counters (and its enrichments') start at 0 too
            for stage, enrich in stage_labels(graph):
                self.stage_rows.labels(graph.name, stage)
                self.stage_seconds.labels(graph.name, stage)
                if enrich:
                    self.enrichment_misses.labels(graph.name, stage)
                    self.enrichment_failures.labels(graph.name, stage)
        self.model_share.clear()
        self.shadow_share.clear()
        for name, version, _ in versions:  # every loaded version: 0 unless it shadows the champion
            self.shadow_share.labels(name, str(version)).set(0.0)
        for name, version, role, share in shares:
            if role == "shadow":
                self.shadow_share.labels(name, str(version)).set(share)
                for outcome in SHADOW_OUTCOMES.values():
                    self.shadow_predictions.labels(name, str(version), outcome)
            else:
                self.model_share.labels(name, str(version), role).set(share)

    def on_model_change(self, model: str, change: str) -> None:
        self.model_changes.labels(model, change).inc()

    def on_labels(self, counts: dict[str, int]) -> None:
        for outcome, count in counts.items():
            self.labels.labels(outcome).inc(count)

    def on_learned(self, counts: dict[tuple[str, str], int]) -> None:
        for (model, version), count in counts.items():
            self.online_updates.labels(model, version).inc(count)

    def on_redis_error(self, operation: str) -> None:
        self.redis_errors.labels(operation).inc()

    def on_prediction_log_dropped(self, count: int) -> None:
        self.prediction_log_dropped.inc(count)

    def on_online_weights(self, model: str, version: str, updates: int | None, age_s: float) -> None:
        """The weights an online model serves: shared update count (None: unchanged) and their age; the labels
        this worker learns for it start at 0."""
        self.online_updates.labels(model, version)
        if updates is not None:
            self.online_shared_updates.labels(model, version).set(updates)
        self.online_age.labels(model, version).set(age_s)

    def on_rolling(self, model: str, version: str, window: str, values: dict[str, float]) -> None:
        """``values``: quantity (a ``ROLLING`` key) -> value; unknown quantities are not exported."""
        for quantity, value in values.items():
            gauge = self.rolling.get(quantity)
            if gauge is not None and value == value:  # not NaN: an undefined value keeps the gauge's last one
                gauge.labels(model, version, window).set(value)

    def on_accuracy_floor(self, floor: float) -> None:
        self.accuracy_floor.set(floor)

    def on_below_floor(self, model: str, version: str, below: bool) -> None:
        self.below_floor.labels(model, version).set(int(below))

    def on_feature_psi(self, model: str, version: str, psi: dict[str, float]) -> None:
        for feature, value in psi.items():
            self.feature_psi.labels(model, version, feature).set(value)

    def on_model_event(self, kind: str) -> None:
        self.model_events.labels(kind).inc()

    def on_oip_request(self, model: str, version: str, status: int, seconds: float) -> None:
        self.oip_requests.labels(model, version, str(status)).inc()
        self.oip_latency.labels(model).observe(seconds)

    def on_oip_connection_closed(self, cause: str) -> None:
        self.oip_connections_closed.labels(cause).inc()

    def on_oip_batch(self, requests: int, seconds: float) -> None:
        self.oip_batch_size.observe(requests)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
