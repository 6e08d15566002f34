"""The composition root of ``streamer worker``: settings -> adapters -> services -> engine.

What every serving mode shares -- the model set, limits, lookups, the scoring function, the control channel,
the model watcher, the learning side -- is built by ``streamer.wiring``; this module adds what only a worker
has (the broker, its topics, the output sink, the pipeline factory) and hands it all to the engine
(``engines.common.WorkerContext``).

Start-up refuses, with one line naming what to fix (exit code 2), when: no Kafka bootstrap is configured; no
model version loads; the configured default model is not loaded; a topic is missing; or the request,
predictions and dead-letter topics have different partition counts (each output goes to its request's
partition number, which is what keeps per-key order end to end whatever partitioner producers use).

Once running, the worker exits 0 on SIGTERM/SIGINT after finishing what it holds, and non-zero when it cannot
make progress (``core.errors.FatalError``: 3 an output could not be delivered, 4 a topic was deleted or
resized, 5 a partition stalled, 7 a Kafka error did not clear within ``kafka.error_timeout_s``), and 2 when a
background service meets an error no retry can fix (refused credentials: ``services.runner``). Before such an
exit ``/ready`` answers 503; the next owner of the partitions recovers by read-back.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from streamer.adapters.devstack import free_port
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.adapters.kafka_producer import KafkaOutputSink
from streamer.adapters.kafka_readback import read_back
from streamer.adapters.listening import Listener, ensure_free
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.config import Settings
from streamer.core import topic_partitions
from streamer.core.errors import BrokerError, BrokerUnreachable, ConfigError
from streamer.core.kafka_faults import PRODUCER
from streamer.engines.common import Readiness, WorkerContext, service_stopped
from streamer.pipeline import ScoringPipeline
from streamer.pipeline_ports import PipelineTopics
from streamer.serve import oip_server, worker_oip_listener
from streamer.services import runner
from streamer.services.kafka_faults import FaultWatch
from streamer.services.runner import Stoppable
from streamer.services.topic_watch import TopicWatch
from streamer.services.watchdog import Watchdog
from streamer.wiring import signals
from streamer.wiring.learning import Learning, state_store, wire_learning
from streamer.wiring.models import (
    OutputLimits,
    ScoreFn,
    batch_scorer,
    entity_lookup,
    export_models,
    load_models,
    output_limits,
    scoring_limits,
    served,
)
from streamer.wiring.serving_state import control_channel, follow_serving_state, watch_models

log = logging.getLogger(__name__)


def check_topics(settings: Settings, admin: KafkaAdmin) -> int:
    """The partition count shared by the request, predictions and dead-letter topics, or ConfigError."""
    topics = settings.topics
    names = (topics.requests, topics.predictions, topics.dlq)
    counts = admin.partition_counts(names)
    missing = [n for n in names if n not in counts]
    if missing:
        raise ConfigError(f"topic(s) {', '.join(missing)} do not exist: run `streamer topics create`")
    ordered = {n: counts[n] for n in names}
    target = counts[topics.requests]
    if topic_partitions.disagreeing(ordered, target):
        raise ConfigError(
            f"partition counts differ ({topic_partitions.describe(ordered)}): predictions and dead letters go to "
            f"their request's partition number, so these topics need the request topic's count; to fix it, "
            f"{topic_partitions.repair(ordered, target)}"
        )
    return target


def wait_for_broker(
    admin: KafkaAdmin, bootstrap: str, timeout_s: float, retry_s: float, sleep: Callable[[float], object] = time.sleep
) -> None:
    """Return once the broker answers a metadata request; log each failed attempt; ``BrokerUnreachable`` (exit 6)
    after ``timeout_s``. Every attempt is itself bounded by the admin client's timeout. ``sleep`` may end early
    (a stop request: the caller checks for it after the wait)."""
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
            signals.exit_if_requested("waiting for the broker")
            attempt += 1


def metrics_listener(settings: Settings) -> Listener:
    """The worker's ``/metrics`` address, as a refusal names it."""
    return Listener(
        settings.worker.metrics_host,
        settings.worker.metrics_port,
        "worker.metrics_host (STREAMER_METRICS_HOST)",
        "worker.metrics_port (STREAMER_METRICS_PORT)",
        "set STREAMER_METRICS_PORT=0 for a free port (printed at start), or another port",
    )


def run(settings: Settings) -> None:
    bootstrap = settings.require_bootstrap()
    # a taken port is refused before the broker wait and the model loading, for either engine (Faust's web
    # server would log the bind failure at ERROR with a traceback and exit 1)
    ensure_free(metrics_listener(settings))
    if settings.worker.oip_port:
        ensure_free(worker_oip_listener(settings))
    # librdkafka's connection-failure lines go to DEBUG (LibrdkafkaLog): one line per attempt is ours, naming
    # the last cause (refused credentials, an untrusted CA, nobody listening)
    probe = KafkaAdmin(bootstrap, settings.kafka.client, timeout_s=min(10.0, max(settings.kafka.startup_retry_s, 1.0)))
    wait_for_broker(probe, bootstrap, settings.kafka.startup_timeout_s, settings.kafka.startup_retry_s, signals.sleep)
    signals.exit_if_requested("waiting for the broker")
    admin = KafkaAdmin(bootstrap, settings.kafka.client)
    partitions = check_topics(settings, admin)
    limits_out = output_limits(settings, admin)
    signals.exit_if_requested("checking the topics")
    models = load_models(settings)
    signals.exit_if_requested("loading the models")
    enabled_rollouts = [name for name, policy in settings.rollout.items() if policy.enabled]
    if enabled_rollouts and not settings.redis.url:
        raise ConfigError(f"rollout.{enabled_rollouts[0]}: a rollout needs Redis (labels and the control channel)")
    serving, metrics = models.serving, WorkerMetrics()
    export_models(serving, metrics)
    readiness = Readiness(worker=settings.worker.worker_id())
    # before any service is built: one that stops on an error no retry can fix ends the worker (exit 2)
    runner.set_process_fatal_hook(service_stopped(readiness))
    started: list[Stoppable] = []
    learning: Learning | None = None
    sink: KafkaOutputSink | None = None
    executor: ThreadPoolExecutor | None = None
    try:
        store = state_store(settings)
        # before any batch: a worker that starts later serves the current state at once
        control = follow_serving_state(settings, serving, metrics, control_channel(settings, store))
        started += [control] if control is not None else []
        learning = wire_learning(settings, bootstrap, serving, models.scan, metrics, store, control)
        watcher = watch_models(settings, serving, models.scan, metrics, [learning])
        started += [watcher] if watcher is not None else []
        lookup = entity_lookup(settings, serving.current.catalog)
        limits = scoring_limits(settings, limits_out.predictions)
        score = batch_scorer(serving, limits, metrics.on_inference, lookup, learning.drift.observe)
        sink = _output_sink(settings, bootstrap, admin, limits_out, metrics)
        worker = settings.worker
        if worker.scoring_threads:
            executor = ThreadPoolExecutor(worker.scoring_threads, thread_name_prefix="streamer-score")
        port = worker.metrics_port or free_port()
        # the same list: what the pipeline factory starts (watchdog, topic watch) is stopped with the rest
        context = WorkerContext(
            settings, bootstrap, port, metrics, sink, readiness, lambda: pipeline_of(), started=started
        )
        faults = context.faults = FaultWatch(settings.kafka.error_timeout_s, context.fatal)  # started by the engine
        started.append(faults)
        sink.report_faults(lambda detail: faults.seen(PRODUCER, "the output producer", detail), faults.clear_producer)
        pipeline_of = partial(_pipeline, context, admin, partitions, limits_out, score, executor, learning, bootstrap)
        if worker.oip_port:  # on-demand serving beside the stream: the same score, the same model set
            oip = oip_server(settings, serving, score, metrics, lambda: readiness.fatal is None)
            oip.start()
            started.append(oip)
            print(f"oip: {oip.url}/v2", flush=True)
        log.info(
            "worker %s starting: engine=%s group=%s requests=%s (%s partitions) serving %s output limits=%s "
            "metrics=http://127.0.0.1:%s/metrics",
            readiness.worker,
            worker.engine,
            worker.group_id,
            settings.topics.requests,
            partitions,
            served(serving.current.catalog),
            limits_out,
            port,
        )
        shown = "127.0.0.1" if worker.metrics_host in ("0.0.0.0", "") else worker.metrics_host
        print(f"metrics: http://{shown}:{port}/metrics", flush=True)  # stdout: stderr carries the (JSON) logs
        Path(settings.dev.state_dir).mkdir(parents=True, exist_ok=True)
        signals.exit_if_requested("starting the services")
        _run_engine(context)
    finally:
        for service in started:
            service.stop()
        if learning is not None:
            learning.stop()
        undelivered = sink.close() if sink is not None else 0
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if undelivered:
            log.warning("%s outputs undelivered at exit; their requests will be re-read and de-duplicated", undelivered)


def _run_engine(context: WorkerContext) -> None:
    """The engines are imported here, not at the top: a worker loads only the one it runs (Faust's import alone
    takes about a second)."""
    if context.settings.worker.engine == "batch":
        from streamer.engines.confluent import run_batch_engine

        signals.exit_if_requested("importing the engine")
        run_batch_engine(context)
    else:
        from streamer.engines.faust import run_faust_engine

        signals.exit_if_requested("importing the engine")
        run_faust_engine(context)


def _output_sink(
    settings: Settings, bootstrap: str, admin: KafkaAdmin, limits: OutputLimits, metrics: WorkerMetrics
) -> KafkaOutputSink:
    """The producer of predictions, dead letters and shadow outputs (transactional when configured)."""
    topics, kafka, worker = settings.topics, settings.kafka, settings.worker
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
    return KafkaOutputSink(
        bootstrap,
        kafka.client,
        predictions_topic=topics.predictions,
        dlq_topic=topics.dlq,
        shadow_topic=topics.shadow,
        shadow_partitions=shadow_partitions,
        max_message_bytes=limits.producer,
        batch_bytes=limits.batch,
        linger_ms=kafka.linger_ms,
        transactional_id=transactional_id,
        on_queue_full=metrics.output_queue_full.inc,
    )


def _pipeline(
    context: WorkerContext,
    admin: KafkaAdmin,
    partitions: int,
    limits: OutputLimits,
    score: ScoreFn,
    executor: ThreadPoolExecutor | None,
    learning: Learning,
    bootstrap: str,
) -> ScoringPipeline:
    """The pipeline, built on the engine's running loop; the watchdog and the topic watch start with it."""
    settings, sink, metrics = context.settings, context.sink, context.metrics
    worker, topics, kafka = settings.worker, settings.topics, settings.kafka
    recover = partial(
        read_back, bootstrap, kafka.client, worker.group_id, topics.requests, topics.predictions, topics.dlq
    )
    pipeline = ScoringPipeline(
        topics=PipelineTopics(topics.requests, topics.predictions, topics.dlq),
        policy=worker.batch_policy(),
        score=score,
        sink=sink,
        recover=recover,
        executor=executor,
        max_inflight=worker.max_inflight_batches,
        max_dead_letter_bytes=limits.dead_letters,
        observer=learning.observer,
    )
    loop = asyncio.get_running_loop()
    sink.bind(loop, pipeline.fail)
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
