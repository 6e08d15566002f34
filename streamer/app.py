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

from streamer.adapters import graph_repository, model_repository, onnx_models
from streamer.adapters.devstack import free_port
from streamer.adapters.kafka_admin import KafkaAdmin, client_config
from streamer.adapters.kafka_producer import KafkaOutputSink
from streamer.adapters.kafka_readback import read_back
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.prometheus_metrics import CONTENT_TYPE, WorkerMetrics
from streamer.adapters.redis_state import RedisStateStore
from streamer.config import Settings
from streamer.core.errors import BrokerError, BrokerUnreachable, ConfigError, FatalError, ModelError
from streamer.core.evaluation import parse_windows
from streamer.core.graph.execution import Enrichment, Lookup, no_lookup
from streamer.core.routing import Catalog, Serving
from streamer.core.scoring import Limits
from streamer.pipeline import FanOut, PipelineTopics, ScoringPipeline
from streamer.services.watchdog import Watchdog
from streamer.serving import ModelSet, ServingModels

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


def configured_serving(settings: Settings) -> dict[str, Serving]:
    """The serving policy of the configuration (``[models]`` pins, canary, shadow), per model name."""
    models = settings.models
    names = set(models.pins) | set(models.canary) | set(models.shadow)
    return {
        name: Serving(
            pin=models.pins.get(name),
            canary=tuple(sorted((int(v), w) for v, w in models.canary.get(name, {}).items())),
            shadow=models.shadow.get(name),
        )
        for name in names
    }


def load_catalog(settings: Settings) -> tuple[Catalog, OnnxScorer, model_repository.ScanResult]:
    scan = model_repository.scan(settings.require_models_dir(), settings.worker.intra_op_num_threads)
    if not scan.loaded:
        refused = "; ".join(str(e) for e in scan.refused.values()) or "the directory holds no <name>/<version>"
        raise ConfigError(f"no servable model in {settings.models.dir}: {refused}")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    catalog = Catalog(cards, settings.models.default, dict(settings.models.pins), configured_serving(settings))
    directory = graph_repository.graphs_dir(settings.require_models_dir(), settings.models.graphs_dir)
    if directory is not None:
        catalog = graph_repository.with_graphs(catalog, graph_repository.read_graphs(directory))
    if catalog.default is not None and catalog.default not in catalog.cards:
        known = ", ".join(sorted(catalog.cards))
        raise ConfigError(f"models.default: {catalog.default!r} is not a loaded model or graph ({known})")
    return catalog, OnnxScorer(scan.loaded), scan


def entity_lookup(settings: Settings, catalog: Catalog) -> Lookup:
    """The feature store of the graphs' enrichment stages: Redis when configured, else defaults (said once)."""
    stages = [s for spec in catalog.graphs.values() for s in spec.stages.values() if s.kind == "enrich"]
    if not stages:
        return no_lookup
    if not settings.redis.url:
        log.warning("no Redis configured: enrichment stages %s serve their defaults", ", ".join(s.name for s in stages))
        return no_lookup
    from streamer.adapters.redis_entities import EntityFeatureStore
    from streamer.adapters.redis_entities import Lookup as EntityLookup

    store = EntityFeatureStore.from_settings(settings.redis)

    def lookup(stage: Any, keys: Any) -> Enrichment:
        names = tuple(name for name, _ in stage.defaults)
        defaults = tuple(default for _, default in stage.defaults)
        found = store.lookup(EntityLookup(stage.entity, keys, names, defaults))
        return Enrichment(found.values, found.found, found.error)

    return lookup


@dataclass(slots=True)
class Health:
    """What ``/ready`` says: ready once partitions are assigned, never again after a fatal error."""

    assigned: bool = False
    fatal: str | None = None
    partitions: Callable[[], list[int]] = list
    worker: str = ""  # the worker's id (worker.worker_id())

    def readiness(self) -> dict[str, Any] | None:
        if self.fatal is not None or not self.assigned:
            return None
        return {"status": "ready", "worker": self.worker, "partitions": self.partitions()}


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


def wait_for_broker(
    admin: KafkaAdmin, bootstrap: str, timeout_s: float, retry_s: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Return once the broker answers a metadata request; log each failed attempt; ``BrokerUnreachable`` (exit 6)
    after ``timeout_s``. Every attempt is itself bounded by the admin client's timeout."""
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            admin.partition_counts([])
            return
        except BrokerError as exc:
            waited = time.monotonic() - started
            if waited + retry_s > timeout_s:
                raise BrokerUnreachable(
                    f"the Kafka broker at {bootstrap} did not answer within kafka.startup_timeout_s={timeout_s:g} "
                    f"({attempt} attempts): {exc}"
                ) from None
            log.warning(
                "broker %s not reachable (attempt %s, %.0f s of %g): %s; retrying in %g s",
                bootstrap,
                attempt,
                waited,
                timeout_s,
                exc,
                retry_s,
            )
            sleep(retry_s)
            attempt += 1


def export_models(serving: ServingModels, metrics: WorkerMetrics) -> None:
    """The loaded versions, traffic shares and graphs on the metrics: now, and after every change of the set."""

    def export(_: ModelSet | None, models: ModelSet) -> None:
        metrics.on_models(models.serving(), models.shares(), models.catalog.graphs.values())

    export(None, serving.current)
    serving.listen(export)


def run(settings: Settings) -> None:
    bootstrap = settings.require_bootstrap()
    # librdkafka's connection-failure lines go to DEBUG (LibrdkafkaLog): one line per attempt is ours, naming
    # the last cause (refused credentials, an untrusted CA, nobody listening)
    probe = KafkaAdmin(bootstrap, settings.kafka.client, timeout_s=min(10.0, max(settings.kafka.startup_retry_s, 1.0)))
    wait_for_broker(probe, bootstrap, settings.kafka.startup_timeout_s, settings.kafka.startup_retry_s)
    admin = KafkaAdmin(bootstrap, settings.kafka.client)
    partitions = check_topics(settings, admin)
    limits_out = output_limits(settings, admin)
    catalog, scorer, scan = load_catalog(settings)
    enabled_rollouts = [name for name, policy in settings.rollout.items() if policy.enabled]
    if enabled_rollouts and not settings.redis.url:
        raise ConfigError(f"rollout.{enabled_rollouts[0]}: a rollout needs Redis (labels and the control channel)")
    serving = ServingModels(ModelSet(catalog, scorer))
    metrics = WorkerMetrics()
    export_models(serving, metrics)
    worker, topics, kafka = settings.worker, settings.topics, settings.kafka
    limits = Limits(worker.max_message_bytes, worker.max_rows_per_request, limits_out.predictions)
    quality = _Quality(settings, bootstrap, serving, scan, metrics)
    lookup = entity_lookup(settings, catalog)

    score = serving.batch_scorer(limits, metrics.on_inference, lookup, quality.observe_matrix)

    shadow_partitions = admin.partition_counts([topics.shadow]).get(topics.shadow, 0)
    if not shadow_partitions:
        log.warning(
            "shadow topic %s does not exist: challengers are scored and evaluated, their outputs not written "
            "(run `streamer topics create`)",
            topics.shadow,
        )
    transactional_id = None
    if kafka.transactional:
        transactional_id = kafka.transactional_id or f"{worker.group_id}-{socket.gethostname()}"
    sink = KafkaOutputSink(
        bootstrap,
        kafka.client,
        predictions_topic=topics.predictions,
        dlq_topic=topics.dlq,
        shadow_topic=topics.shadow,
        shadow_partitions=shadow_partitions,
        max_message_bytes=limits_out.producer,
        batch_bytes=limits_out.batch,
        linger_ms=kafka.linger_ms,
        transactional_id=transactional_id,
        on_queue_full=metrics.output_queue_full.inc,
    )
    executor = (
        ThreadPoolExecutor(worker.scoring_threads, thread_name_prefix="streamer-score")
        if worker.scoring_threads
        else None
    )
    recover = partial(
        read_back, bootstrap, kafka.client, worker.group_id, topics.requests, topics.predictions, topics.dlq
    )
    policy = worker.batch_policy()
    health = Health(worker=worker.worker_id())
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

    if worker.oip_port:  # on-demand serving beside the stream: the same score, the same model set
        from streamer.serve import oip_server

        oip = oip_server(settings, serving, score, metrics, lambda: health.fatal is None)
        oip.start()
        context.started.append(oip)
        print(f"oip: {oip.url}/v2", flush=True)
    log.info(
        "worker %s starting: engine=%s group=%s requests=%s (%s partitions) models=%s output limits=%s "
        "metrics=http://127.0.0.1:%s/metrics",
        health.worker,
        worker.engine,
        worker.group_id,
        topics.requests,
        partitions,
        ", ".join(f"{n}@{v}{'*' if s else ''}" for n, v, s in serving.current.serving()),
        limits_out,
        port,
    )
    shown = "127.0.0.1" if worker.metrics_host in ("0.0.0.0", "") else worker.metrics_host
    print(f"metrics: http://{shown}:{port}/metrics", flush=True)  # stdout: stderr carries the (JSON) logs
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
    """Everything about models a worker runs beside scoring, and what it needs from the scoring path.

    Always: feature-drift counts (``observe_matrix``), the quality monitor with its model-events producer, and
    hot reload of the model repository (``models.watch``). With Redis configured: the prediction log (an
    observer of released predictions), the label consumer, the shared rolling evaluation and accuracy floor,
    online models learning in Redis at bounded staleness, the control channel (promotions, rollbacks, pins from
    any worker or command) and label-driven rollouts. Without Redis, online models serve their shipped weights
    (logged), and no labels are consumed.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        serving: ServingModels,
        scan: model_repository.ScanResult,
        metrics: WorkerMetrics,
    ) -> None:
        from confluent_kafka import Producer

        from streamer.services.quality_monitor import DriftCounts, ModelEvents, QualityMonitor

        self._settings, self._serving, self._metrics = settings, serving, metrics
        self._started: list[Any] = []
        self.observer: Any = metrics
        self.drift = DriftCounts(scan.cards())
        self.observe_matrix = self.drift.observe
        self.store: RedisStateStore | None = None
        self._refresher: Any = None
        self._control: Any = None
        self._events_producer = Producer(client_config(bootstrap, settings.kafka.client, **{"linger.ms": 5}))
        if settings.redis.url:
            self.store = RedisStateStore.from_settings(
                settings.redis, windows=parse_windows(settings.evaluation.windows)
            )
        self.events = ModelEvents(
            self._events_producer, settings.topics.model_events, self.store, metrics, settings.worker.worker_id()
        )
        online = [m for versions in scan.loaded.values() for m in versions.values() if m.card.online is not None]
        if self.store is not None:
            self._start_redis_side(settings, bootstrap, self.store, metrics, online)
        elif online:
            log.warning(
                "online model(s) %s serve their shipped weights: no Redis configured, so nothing is learnt",
                ", ".join(m.card.ref for m in online),
            )
        monitor = QualityMonitor(
            settings.evaluation, lambda: serving.current.catalog, self.store, self.drift, self.events, metrics
        )
        monitor.start()
        self._started.append(monitor)
        if settings.models.watch:
            self._start_watcher(settings, scan)

    def _start_watcher(self, settings: Settings, scan: model_repository.ScanResult) -> None:
        from streamer.services.model_watcher import ModelWatcher

        for path, error in scan.refused.items():
            self._refused(path, error)
        watcher = ModelWatcher(
            settings.require_models_dir(),
            self._serving,
            on_loaded=self._loaded,
            on_refused=self._refused,
            on_removed=self._removed,
            interval_s=settings.models.watch_interval_s,
            settle_s=settings.models.settle_s,
            intra_op_num_threads=settings.worker.intra_op_num_threads,
        )
        watcher.refused_at_start(scan.refused)
        watcher.start()
        self._started.append(watcher)

    def _loaded(self, model: onnx_models.LoadedModel) -> None:
        card = model.card
        self._metrics.on_model_change(card.name, "loaded")
        self.drift.add(card)
        if card.online is not None and self._refresher is not None:
            self._refresher.add(model)
        self.events.emit("model-loaded", card.name, str(card.version), path=str(model.path.parent))

    def _refused(self, path: Path, error: ModelError) -> None:
        name, version = path.parent.name, path.name
        log.error("refused model %s@%s: %s", name, version, error)
        self._metrics.on_model_change(name, "refused")
        self.events.emit("model-refused", name, version, reason=str(error), path=str(path))

    def _removed(self, ref: str) -> None:
        name, _, version = ref.partition("@")
        self._metrics.on_model_change(name, "removed")
        serving = self._serving.current.catalog.serving_version(name)
        self.events.emit("model-removed", name, version, now_serving=serving)

    def _start_redis_side(
        self,
        settings: Settings,
        bootstrap: str,
        store: RedisStateStore,
        metrics: WorkerMetrics,
        online: list[onnx_models.LoadedModel],
    ) -> None:
        from streamer.adapters.redis_control import ControlChannel
        from streamer.services.label_consumer import LabelConsumer
        from streamer.services.online_refresh import OnlineRefresher
        from streamer.services.prediction_log import PredictionLog
        from streamer.services.rollout import Rollouts
        from streamer.services.serving_control import ServingControl

        channel = ControlChannel(store.client, store.prefix)
        control = ServingControl(
            channel, self._serving, configured_serving(settings), metrics, settings.models.control_interval_s
        )
        control.start()  # before any batch: a worker that starts later serves the current state at once
        self._started.append(control)
        if any(policy.enabled for policy in settings.rollout.values()):
            rollouts = Rollouts(
                channel,
                store,
                self._serving,
                settings.rollout,
                self.events.emit,
                control.apply_once,
                metrics,
                settings.evaluation.check_interval_s,
            )
            rollouts.start()
            self._started.append(rollouts)
        self._refresher = OnlineRefresher(
            store,
            self._serving,
            metrics,
            settings.online.refresh_ms / 1000.0,
            settings.worker.intra_op_num_threads,
        )
        for model in online:
            self._refresher.add(model)
        self._refresher.start()
        self._started.append(self._refresher)
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
        self._started += [labels, prediction_log]
        self.observer = FanOut(metrics, prediction_log)

    def stop(self) -> None:
        for service in self._started:
            service.stop()
        self._events_producer.flush(5)
