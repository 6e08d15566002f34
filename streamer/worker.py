"""``streamer worker``: wires settings, models, Kafka clients, metrics and an engine into one scoring worker.

Start-up refuses, with one line naming what to fix, when: no Kafka bootstrap is configured; no model version
loads; the configured default model is not loaded; a topic is missing; or the request, predictions and
dead-letter topics have different partition counts (each output goes to its request's partition number, which
is what keeps per-key order end to end whatever partitioner producers use).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from streamer import logs
from streamer.adapters import model_repository
from streamer.adapters.devstack import free_port
from streamer.adapters.feedback import FeedbackLoop, PredictionLogger
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.adapters.kafka_output import OutputProducer, emitted_offsets
from streamer.adapters.metrics import CONTENT_TYPE, WorkerMetrics
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.redis_state import LoggedPrediction, RedisStateStore
from streamer.config import Settings
from streamer.core.batching import BatchPolicy
from streamer.core.cards import ModelCard
from streamer.core.errors import ConfigError
from streamer.core.routing import Catalog
from streamer.core.scoring import Limits, score_batch
from streamer.pipeline import ScoringPipeline

log = logging.getLogger(__name__)


def check_topics(settings: Settings, bootstrap: str) -> int:
    """The partition count shared by the request, predictions and dead-letter topics, or ConfigError."""
    topics = settings.topics
    names = (topics.requests, topics.predictions, topics.dlq)
    counts = KafkaAdmin(bootstrap, settings.kafka.client).partition_counts(names)
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


def run(settings: Settings) -> None:
    bootstrap = settings.require_bootstrap()
    partitions = check_topics(settings, bootstrap)
    catalog, scorer, scan = load_catalog(settings)
    metrics = WorkerMetrics()
    for name, versions in scan.loaded.items():
        for version in versions:
            serving = "1" if catalog.serving_version(name) == version else "0"
            metrics.model_info.labels(name, str(version), serving).set(1)

    def infer(card: ModelCard, matrix: Any) -> Any:
        started = time.perf_counter()
        try:
            return scorer.infer(card, matrix)
        finally:
            metrics.on_inference(card.name, str(card.version), time.perf_counter() - started)

    worker = settings.worker
    limits = Limits(worker.max_message_bytes, worker.max_rows_per_request)
    quality = _Quality(settings, bootstrap, catalog, scorer, scan, metrics)
    score = partial(score_batch, catalog=catalog, infer=infer, limits=limits, observe_matrix=quality.observe_matrix)
    transactional_id = None
    if settings.kafka.transactional:
        transactional_id = settings.kafka.transactional_id or f"{worker.group_id}-{socket.gethostname()}"
    producer = OutputProducer(bootstrap, settings.kafka.client, settings.kafka.linger_ms, transactional_id)
    executor = ThreadPoolExecutor(worker.scoring_threads, thread_name_prefix="streamer-score")
    topics = settings.topics
    recover = partial(
        emitted_offsets, bootstrap, settings.kafka.client, topics.requests, [topics.predictions, topics.dlq]
    )
    policy = BatchPolicy(worker.batch_max_size, worker.batch_max_wait_ms / 1000.0)
    observer = quality.observer

    async def make_pipeline(ack: Any) -> ScoringPipeline:
        return ScoringPipeline(
            requests_topic=topics.requests,
            predictions_topic=topics.predictions,
            dlq_topic=topics.dlq,
            policy=policy,
            score=score,
            producer=producer,
            recover=recover,
            ack=ack,
            executor=executor,
            max_inflight=worker.max_inflight_batches,
            observer=observer,
        )

    def on_failure(error: BaseException) -> None:
        # Outputs could not be delivered: stop hard, without acknowledging anything more. The next owner of the
        # partitions reads back what reached the log and goes on from there.
        log.critical("fatal: %s", error)
        os._exit(3)

    port = worker.metrics_port or free_port()
    log.info(
        "worker starting: engine=%s group=%s requests=%s (%s partitions) models=%s metrics=http://127.0.0.1:%s/metrics",
        worker.engine,
        worker.group_id,
        topics.requests,
        partitions,
        ", ".join(c.ref for c in scan.cards()),
        port,
    )
    print(f"metrics: http://127.0.0.1:{port}/metrics", flush=True)  # stdout: stderr carries the (JSON) logs
    Path(settings.dev.state_dir).mkdir(parents=True, exist_ok=True)
    try:
        if worker.engine == "batch":
            asyncio.run(_run_batch_engine(settings, bootstrap, port, producer, make_pipeline, metrics, on_failure))
        else:
            _run_faust_engine(settings, bootstrap, port, make_pipeline, metrics, on_failure)
    finally:
        quality.stop()
        undelivered = producer.close()
        executor.shutdown(wait=False, cancel_futures=True)
        if undelivered:
            log.warning("%s outputs undelivered at exit; their requests will be re-read and de-duplicated", undelivered)


class _PredictionLog:
    """Observer that hands each emitted single-row prediction to the Redis prediction log."""

    def __init__(self, logger: PredictionLogger, catalog: Catalog) -> None:
        self._logger = logger
        self._catalog = catalog
        self._thresholds: dict[str | None, float] = {}  # by "name@version": resolved once, not per prediction

    def on_outcomes(self, outcomes: list[Any], latencies_ms: list[float]) -> None:
        now = time.time()
        entries = []
        for outcome in outcomes:
            body = outcome.body
            if body is None or isinstance(body["score"], list):
                continue
            threshold = self._thresholds.get(outcome.model)
            if threshold is None:
                threshold = self._thresholds[outcome.model] = self._catalog.resolve(outcome.model).threshold
            entries.append(
                LoggedPrediction(
                    body["id"], body["model"], body["version"], body["score"], threshold, now, outcome.features
                )
            )
        if entries:
            self._logger.submit(entries)


class _Quality:
    """Everything about model quality a worker runs beside scoring, and what it needs from the scoring path.

    Always: feature-drift counts (``observe_matrix``) and the quality monitor with its model-events producer.
    With Redis configured: the prediction log (an observer of emitted predictions), the feedback consumer, the
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

        from streamer.adapters.kafka_admin import client_config
        from streamer.adapters.quality_monitor import DriftCounts, ModelEvents, QualityMonitor

        self._stoppers: list[Any] = []
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
        self._stoppers.append(monitor)

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
        from streamer.pipeline import FanOut

        store = RedisStateStore.from_settings(settings.redis, windows=parse_windows(settings.evaluation.windows))
        if online:
            try:
                registered = online_models.register(store, online)
            except Exception as exc:  # Redis down at start: serve the shipped weights, learn once it answers
                metrics.redis_errors.labels("online_register").inc()
                log.warning("cannot register online models in Redis (%s): serving their shipped weights", exc)
                registered = [online_models.OnlineModel(m, online_models.spec_of(m)[0]) for m in online]
            refresher = online_models.OnlineRefresher(
                store,
                registered,
                scorer,
                metrics,
                settings.online.refresh_ms / 1000.0,
                settings.worker.intra_op_num_threads,
            )
            refresher.start()
            self._stoppers.append(refresher)
        logger = PredictionLogger(store, metrics, settings.redis.max_queued_predictions)
        loop = FeedbackLoop(
            bootstrap,
            settings.kafka.client,
            settings.worker.group_id,
            settings.topics.feedback,
            settings.topics.dlq,
            store,
            metrics,
            logger,
            session_timeout_ms=settings.kafka.session_timeout_ms,
            heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        )
        loop.start()
        self._stoppers += [loop, logger]
        self.observer = FanOut(metrics, _PredictionLog(logger, catalog))
        return store

    def stop(self) -> None:
        for stopper in self._stoppers:
            stopper.stop()
        self._events_producer.flush(5)


def _run_faust_engine(
    settings: Settings,
    bootstrap: str,
    port: int,
    make_pipeline: Callable[[Any], Awaitable[ScoringPipeline]],
    metrics: WorkerMetrics,
    on_failure: Callable[[BaseException], None],
) -> None:
    import faust

    from streamer.adapters.faust_app import build_app

    app = build_app(settings, bootstrap, port, make_pipeline, metrics.exposition, CONTENT_TYPE, on_failure)
    faust.Worker(
        app, loglevel=logs.level(), logging_config=logs.dict_config(), quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


async def _run_batch_engine(
    settings: Settings,
    bootstrap: str,
    port: int,
    producer: OutputProducer,
    make_pipeline: Callable[[Any], Awaitable[ScoringPipeline]],
    metrics: WorkerMetrics,
    on_failure: Callable[[BaseException], None],
) -> None:
    """Engine ``batch``: the confluent-kafka loop, our own HTTP endpoints and signal handling, no Faust.

    Faust's consumer refuses to start with nothing to subscribe to, and this engine consumes the request topic
    itself; running Faust only for its web server would cost a second group membership and a thread for
    nothing, so the lifecycle here is plain asyncio (measured: the worker stops in about a second on SIGTERM).
    """
    from streamer.adapters.http_endpoints import Endpoints
    from streamer.adapters.kafka_batch_engine import BatchConsumeLoop

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    batch_loop = BatchConsumeLoop(settings, bootstrap, producer)
    pipeline = await make_pipeline(batch_loop.ack)

    def readiness() -> dict[str, Any] | None:
        if batch_loop.assigned.is_set():
            return {"status": "ready", "partitions": pipeline.assigned}
        return None

    endpoints = Endpoints(port, metrics.exposition, CONTENT_TYPE, readiness)
    endpoints.start()
    pipeline.start()
    batch_loop.start(pipeline, loop, on_failure)
    failed = loop.create_task(pipeline.wait_failed())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        on_failure(failed.result())
    log.info("stopping: draining in-flight batches, committing")
    await loop.run_in_executor(None, batch_loop.stop)
    endpoints.stop()
    log.info("stopped")
