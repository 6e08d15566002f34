"""The composition root of ``streamer worker``: settings -> adapters -> services -> engine.

Start-up refuses, with one line naming what to fix (exit code 2), when: no Kafka bootstrap is configured; no
model version loads; the configured default model is not loaded; a topic is missing; or the request,
predictions and dead-letter topics have different partition counts (each output goes to its request's
partition number, which is what keeps per-key order end to end whatever partitioner producers use).

Once running, the worker exits 0 on SIGTERM/SIGINT after finishing what it holds, and non-zero when it cannot
make progress (``core.errors.FatalError``: 3 an output could not be delivered, 4 an output topic was deleted
or resized, 5 a partition stalled). Before such an exit ``/ready`` answers 503; the next owner of the
partitions recovers by read-back.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from streamer.adapters import model_repository
from streamer.adapters.devstack import free_port
from streamer.adapters.kafka_admin import KafkaAdmin, client_config
from streamer.adapters.kafka_producer import KafkaOutputSink
from streamer.adapters.kafka_readback import emitted_offsets
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.prometheus_metrics import CONTENT_TYPE, WorkerMetrics
from streamer.adapters.redis_state import RedisStateStore
from streamer.config import Settings
from streamer.core.batching import BatchPolicy
from streamer.core.cards import ModelCard
from streamer.core.errors import ConfigError, FatalError
from streamer.core.routing import Catalog
from streamer.core.scoring import Limits, score_records
from streamer.pipeline import FanOut, PipelineTopics, ScoringPipeline
from streamer.services.watchdog import Watchdog

log = logging.getLogger(__name__)

# Where the broker reports no max.message.bytes (the embedded one accepts anything, measured up to 20 MB):
# the largest request a consumer fetches by default (librdkafka's fetch.max.bytes), which comes back whole as
# its dead letter.
UNREPORTED_MAX_BYTES = 64 * 1024 * 1024


def check_topics(settings: Settings, admin: KafkaAdmin) -> int:
    """The partition count shared by the request, predictions and dead-letter topics, or ConfigError."""
    topics = settings.topics
    names = (topics.requests, topics.predictions, topics.dlq)
    counts = admin.partition_counts(names)
    missing = [n for n in names if n not in counts]
    if missing:
        raise ConfigError(f"topic(s) {', '.join(missing)} do not exist: run `streamer topics create`")
    if len(set(counts.values())) != 1:
        shown = ", ".join(f"{n}={counts[n]}" for n in names)
        raise ConfigError(
            f"partition counts differ ({shown}): predictions and dead letters go to their request's partition "
            "number, so the three topics need the same count"
        )
    return counts[topics.requests]


@dataclass(frozen=True, slots=True)
class OutputLimits:
    predictions: int
    dead_letters: int

    @property
    def producer(self) -> int:
        return min(max(self.predictions, self.dead_letters) + 1024, 1_000_000_000)

    @property
    def batch(self) -> int:
        return max(min(1_000_000, self.predictions - 1024, self.dead_letters - 1024), 1)


def output_limits(settings: Settings, admin: KafkaAdmin) -> OutputLimits:
    configured = settings.kafka.max_output_bytes
    if configured:
        return OutputLimits(configured, configured)
    reported = admin.max_message_bytes([settings.topics.predictions, settings.topics.dlq])
    return OutputLimits(
        reported[settings.topics.predictions] or UNREPORTED_MAX_BYTES,
        reported[settings.topics.dlq] or UNREPORTED_MAX_BYTES,
    )


def load_catalog(settings: Settings) -> tuple[Catalog, OnnxScorer, model_repository.ScanResult]:
    scan = model_repository.scan(settings.require_models_dir(), settings.worker.intra_op_num_threads)
    if not scan.loaded:
        refused = "; ".join(str(e) for e in scan.refused.values()) or "the directory holds no <name>/<version>"
        raise ConfigError(f"no servable model in {settings.models.dir}: {refused}")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    catalog = Catalog(cards, settings.models.default, dict(settings.models.pins))
    if catalog.default is not None and catalog.default not in cards:
        raise ConfigError(f"models.default: {catalog.default!r} is not a loaded model ({', '.join(sorted(cards))})")
    return catalog, OnnxScorer(scan.loaded), scan


@dataclass(slots=True)
class Health:
    """What ``/ready`` says: ready once partitions are assigned, never again after a fatal error."""

    assigned: bool = False
    fatal: str | None = None
    partitions: Callable[[], list[int]] = list

    def readiness(self) -> dict[str, Any] | None:
        if self.fatal is not None or not self.assigned:
            return None
        return {"status": "ready", "partitions": self.partitions()}


@dataclass(slots=True)
class WorkerContext:
    """Everything an engine needs, wired: it only consumes, hands records to the pipeline and commits."""

    settings: Settings
    bootstrap: str
    port: int
    metrics: WorkerMetrics
    sink: KafkaOutputSink
    health: Health
    make_pipeline: Callable[[], ScoringPipeline]
    metrics_content_type: str = CONTENT_TYPE
    started: list[Any] = field(default_factory=list)

    def fatal(self, error: BaseException) -> NoReturn:
        """Stop hard: nothing more is acknowledged; the next owner of the partitions reads back the outputs."""
        code = error.exit_code if isinstance(error, FatalError) else 1
        self.health.fatal = str(error)
        log.critical("fatal (exit %s): %s", code, error)
        logging.shutdown()
        os._exit(code)


def run(settings: Settings) -> None:
    bootstrap = settings.require_bootstrap()
    admin = KafkaAdmin(bootstrap, settings.kafka.client)
    partitions = check_topics(settings, admin)
    limits_out = output_limits(settings, admin)
    catalog, scorer, scan = load_catalog(settings)
    metrics = WorkerMetrics()
    metrics.on_models(
        [(name, v, catalog.serving_version(name) == v) for name, versions in scan.loaded.items() for v in versions]
    )

    def infer(card: ModelCard, matrix: Any) -> Any:
        started = time.perf_counter()
        try:
            return scorer.infer(card, matrix)
        finally:
            metrics.on_inference(card.name, str(card.version), time.perf_counter() - started)

    worker, topics, kafka = settings.worker, settings.topics, settings.kafka
    limits = Limits(worker.max_message_bytes, worker.max_rows_per_request, limits_out.predictions)
    quality = _Quality(settings, bootstrap, catalog, scorer, scan, metrics)
    score = partial(score_records, catalog=catalog, infer=infer, limits=limits, observe_matrix=quality.observe_matrix)
    transactional_id = None
    if kafka.transactional:
        transactional_id = kafka.transactional_id or f"{worker.group_id}-{socket.gethostname()}"
    sink = KafkaOutputSink(
        bootstrap,
        kafka.client,
        predictions_topic=topics.predictions,
        dlq_topic=topics.dlq,
        max_message_bytes=limits_out.producer,
        batch_bytes=limits_out.batch,
        linger_ms=kafka.linger_ms,
        transactional_id=transactional_id,
    )
    executor = (
        ThreadPoolExecutor(worker.scoring_threads, thread_name_prefix="streamer-score")
        if worker.scoring_threads
        else None
    )
    recover = partial(emitted_offsets, bootstrap, kafka.client, topics.requests, [topics.predictions, topics.dlq])
    policy = BatchPolicy(worker.batch_max_size, worker.batch_max_wait_ms / 1000.0, worker.batch_close_when_drained)
    health = Health()
    port = worker.metrics_port or free_port()
    context = WorkerContext(settings, bootstrap, port, metrics, sink, health, lambda: pipeline_of())

    def pipeline_of() -> ScoringPipeline:
        """Built on the engine's running loop; the watchdog and the topic watch start with it."""
        import asyncio

        from streamer.services.topic_watch import TopicWatch

        pipeline = ScoringPipeline(
            topics=PipelineTopics(topics.requests, topics.predictions, topics.dlq),
            policy=policy,
            score=score,
            sink=sink,
            recover=recover,
            executor=executor,
            max_inflight=worker.max_inflight_batches,
            max_dead_letter_bytes=limits_out.dead_letters,
            observer=quality.observer,
        )
        loop = asyncio.get_running_loop()
        sink.bind(loop, pipeline.fail)
        health.partitions = lambda: pipeline.assigned
        watchdog = Watchdog(pipeline.stalled, worker.stall_timeout_s, context.fatal, metrics)
        watch = TopicWatch(
            admin.partition_counts,
            [topics.requests, topics.predictions, topics.dlq],
            partitions,
            lambda error: loop.call_soon_threadsafe(pipeline.fail, error),
            worker.topic_check_interval_s,
        )
        watchdog.start()
        watch.start()
        context.started += [watchdog, watch]
        return pipeline

    log.info(
        "worker starting: engine=%s group=%s requests=%s (%s partitions) models=%s output limits=%s "
        "metrics=http://127.0.0.1:%s/metrics",
        worker.engine,
        worker.group_id,
        topics.requests,
        partitions,
        ", ".join(c.ref for c in scan.cards()),
        limits_out,
        port,
    )
    print(f"metrics: http://127.0.0.1:{port}/metrics", flush=True)  # stdout: stderr carries the (JSON) logs
    Path(settings.dev.state_dir).mkdir(parents=True, exist_ok=True)
    try:
        if worker.engine == "batch":
            from streamer.engines.confluent import run_batch_engine

            run_batch_engine(context)
        else:
            from streamer.engines.faust import run_faust_engine

            run_faust_engine(context)
    finally:
        for service in context.started:
            service.stop()
        quality.stop()
        undelivered = sink.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if undelivered:
            log.warning("%s outputs undelivered at exit; their requests will be re-read and de-duplicated", undelivered)


class _Quality:
    """Everything about model quality a worker runs beside scoring, and what it needs from the scoring path.

    Always: feature-drift counts (``observe_matrix``) and the quality monitor with its model-events producer.
    With Redis configured: the prediction log (an observer of released predictions), the label consumer, the
    shared rolling evaluation and accuracy floor, and online models learning in Redis at bounded staleness.
    Without Redis, online models serve their shipped weights (logged), and no labels are consumed.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        catalog: Catalog,
        scorer: OnnxScorer,
        scan: model_repository.ScanResult,
        metrics: WorkerMetrics,
    ) -> None:
        from confluent_kafka import Producer

        from streamer.services.quality_monitor import DriftCounts, ModelEvents, QualityMonitor

        self._started: list[Any] = []
        self.observer: Any = metrics
        self.drift = DriftCounts(scan.cards())
        self.observe_matrix = self.drift.observe if self.drift.counts else None
        store = None
        online = [m for versions in scan.loaded.values() for m in versions.values() if m.card.online is not None]
        if settings.redis.url:
            store = self._start_redis_side(settings, bootstrap, catalog, scorer, metrics, online)
        elif online:
            log.warning(
                "online model(s) %s serve their shipped weights: no Redis configured, so nothing is learnt",
                ", ".join(m.card.ref for m in online),
            )
        self._events_producer = Producer(client_config(bootstrap, settings.kafka.client, **{"linger.ms": 5}))
        events = ModelEvents(self._events_producer, settings.topics.model_events, store, metrics)
        monitor = QualityMonitor(settings.evaluation, catalog, store, self.drift, events, metrics)
        monitor.start()
        self._started.append(monitor)

    def _start_redis_side(
        self,
        settings: Settings,
        bootstrap: str,
        catalog: Catalog,
        scorer: OnnxScorer,
        metrics: WorkerMetrics,
        online: list[model_repository.LoadedModel],
    ) -> RedisStateStore:
        from streamer.adapters import online as online_models
        from streamer.core.evaluation import parse_windows
        from streamer.services.label_consumer import LabelConsumer
        from streamer.services.online_refresh import OnlineRefresher
        from streamer.services.prediction_log import PredictionLog

        store = RedisStateStore.from_settings(settings.redis, windows=parse_windows(settings.evaluation.windows))
        if online:
            try:
                registered = online_models.register(store, online)
            except Exception as exc:  # Redis down at start: serve the shipped weights, learn once it answers
                metrics.on_redis_error("online_register")
                log.warning("cannot register online models in Redis (%s): serving their shipped weights", exc)
                registered = [online_models.OnlineModel(m, online_models.spec_of(m)[0]) for m in online]
            refresher = OnlineRefresher(
                store,
                registered,
                scorer,
                metrics,
                settings.online.refresh_ms / 1000.0,
                settings.worker.intra_op_num_threads,
            )
            refresher.start()
            self._started.append(refresher)
        prediction_log = PredictionLog(
            store,
            metrics,
            lambda ref: catalog.resolve(ref).threshold,
            settings.redis.max_queued_predictions,
        )
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
        self._started += [labels, prediction_log]
        self.observer = FanOut(metrics, prediction_log)
        return store

    def stop(self) -> None:
        for service in self._started:
            service.stop()
        self._events_producer.flush(5)
