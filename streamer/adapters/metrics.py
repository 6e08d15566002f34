"""Prometheus metrics as observer hooks: the pipeline calls ``on_*``; only this module touches a metric.

Names are prefixed ``streamer_``, carry their unit (``_seconds``, ``_messages``) and the conventional
``_total`` suffix for counters. Histogram buckets are chosen for milliseconds-scale latencies. Each worker
has its own ``CollectorRegistry`` so tests and several pipelines in one process never collide.
"""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamer.core.scoring import Outcome

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST


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
            "streamer_dead_letters_total", "Dead letters by reason (contract section 5).", ["reason"], registry=r
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
            "duplicate (already applied), dead_letter (undecodable feedback).",
            ["outcome"],
            registry=r,
        )
        self.rolling = Gauge(
            "streamer_rolling_metric",
            "Rolling evaluation from joined labels, shared by all workers (Redis), per model version and window.",
            ["model", "version", "window", "metric"],
            registry=r,
        )
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

    # observer hooks -------------------------------------------------------------------------------

    def on_batch(self, partition: int, size: int, wait_s: float, scoring_s: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(wait_s)
        self.batch_scoring.observe(scoring_s)

    def on_outcomes(self, outcomes: list[Outcome], latencies_ms: list[float]) -> None:
        """Counted per call, not per message: a labelled increment takes a lock and costs more than a dict."""
        requests: collections.Counter[tuple[str | None, str]] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        predicted: collections.Counter[tuple[str | None, object]] = collections.Counter()
        scores: dict[str | None, list[float]] = collections.defaultdict(list)
        for outcome in outcomes:
            body = outcome.body
            if body is not None:
                requests[(outcome.model, "prediction")] += 1
                score, label = body["score"], body["label"]
                if isinstance(score, list):  # an OIP request: one score (and label) per row
                    scores[outcome.model].extend(score)
                    for row_label in label or ():
                        predicted[(outcome.model, row_label)] += 1
                else:
                    scores[outcome.model].append(score)
                    if label is not None:
                        predicted[(outcome.model, label)] += 1
            else:
                requests[(outcome.model, "dead_letter")] += 1
                reasons[outcome.error.reason] += 1
        for (model, kind), count in requests.items():
            name, _, version = (model or "").partition("@")
            self.requests.labels(name, version, kind).inc(count)
        for reason, count in reasons.items():
            self.dead_letters.labels(reason).inc(count)
        for (model, label), count in predicted.items():
            name, _, version = (model or "").partition("@")
            self.labels_predicted.labels(name, version, str(label)).inc(count)
        for model, values in scores.items():
            name, _, version = (model or "").partition("@")
            histogram = self.scores.labels(name, version)
            for value in values:
                histogram.observe(value)
        observe = self.latency.observe
        for latency_ms in latencies_ms:
            observe(max(latency_ms, 0.0) / 1000.0)

    def on_skipped(self, partition: int, count: int) -> None:
        self.skipped.labels(str(partition)).inc(count)

    def on_reorder_depth(self, partition: int, depth: int) -> None:
        self.reorder_depth.labels(str(partition)).set(depth)

    def on_inflight(self, batches: int) -> None:
        self.inflight.set(batches)

    def on_lag(self, partition: int, messages: int) -> None:
        self.lag.labels(str(partition)).set(messages)

    def on_labels(self, counts: dict[str, int]) -> None:
        for outcome, count in counts.items():
            self.labels.labels(outcome).inc(count)

    def on_inference(self, model: str, version: str, seconds: float) -> None:
        self.inference.labels(model, version).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
