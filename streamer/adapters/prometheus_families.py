"""Every Prometheus metric of a worker, declared once: names, help, labels, buckets, and the series that start
at 0.

Names are prefixed ``streamer_``, carry their unit (``_seconds``, ``_messages``) and the conventional
``_total`` suffix for counters. Histogram buckets are chosen for milliseconds-scale latencies; histograms are
``BulkHistogram`` (observed a batch at a time, ``adapters.prometheus_histograms``). Each worker has its own
``CollectorRegistry`` so tests and several pipelines in one process never collide.

Counters whose label values are known in advance start at 0, so a rate or an alert never meets an absent
series: at start the dead-letter reasons, label outcomes, model-event types, Redis operations and the dead
letters of requests no model was chosen for; per model when a version is loaded (its request outcomes and
hot-reload changes, a challenger's shadow outcomes, an online model's learnt labels); per partition when it is
first reported (the hooks in ``prometheus_data_path`` and ``prometheus_service_hooks`` start those).

The rolling evaluation is one gauge per quantity (``ROLLING``), so that a sum or an average over a metric's
labels means something.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamer.adapters.prometheus_histograms import BulkHistogram
from streamer.core.errors import DEAD_LETTER_REASONS
from streamer.core.stages import STAGES

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Stages of the data path and the event loop's lag are often well under a millisecond.
FINE_BUCKETS_S = (0.0001, 0.00025, 0.0005, *LATENCY_BUCKETS_S)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
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
    "concept-drift",
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
    "concept_drift",
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


class MetricFamilies:
    """The declarations: one attribute per metric family, all in ``self.registry``."""

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
        self.batch_size = BulkHistogram(
            "streamer_batch_size_messages", "Messages per scored micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_wait = BulkHistogram(
            "streamer_batch_wait_seconds",
            "Time from a batch's first message to its close.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_scoring = BulkHistogram(
            "streamer_batch_scoring_seconds",
            "Time to decode, build features and run inference for one batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inference = BulkHistogram(
            "streamer_inference_seconds",
            "ONNX Runtime time per model call.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.latency = BulkHistogram(
            "streamer_end_to_end_latency_seconds",
            "From the request's Kafka timestamp to the prediction being produced.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_latency = BulkHistogram(
            "streamer_stage_latency_seconds",
            "Time a sampled request (each batch's first row) took to reach each stage of the data path from the "
            "stage before: consumed (from its Kafka timestamp), batched, scored, produced, delivered, committed.",
            ["stage"],
            buckets=FINE_BUCKETS_S,
            registry=r,
        )
        self.stage_series = {stage: self.stage_latency.labels(stage) for stage in STAGES}
        self.loop_lag = BulkHistogram(
            "streamer_event_loop_lag_seconds",
            "How late a callback the worker schedules on its event loop runs (a probe every 0.1 s): time the loop "
            "spent on something else, or waiting for the GIL.",
            buckets=FINE_BUCKETS_S,
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
        self.scores = BulkHistogram(
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
        self.enrichment_failed_rows = Counter(
            "streamer_enrichment_failed_rows_total",
            "Rows whose entity features could not be read (the store down, too slow, or skipped by the breaker), "
            "by what the stage's on_failure made of them: defaults (decided on the defaults), dead-letter "
            "(enrichment-failed dead letters) or review (the decision forced to review).",
            ["graph", "stage", "on_failure"],
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
        self.oip_latency = BulkHistogram(
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
        self.oip_batch_size = BulkHistogram(
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
        self._partitions: set[int] = set()  # partitions whose counters were started (DataPathHooks._partition)
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
