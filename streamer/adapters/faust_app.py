"""The Faust engine: a Faust app whose agent feeds the request topic into the shared scoring pipeline.

The agent consumes raw bytes (``raw`` key and value serializers) with ``take_events``, so key, headers,
partition, offset and timestamp of every message stay known, and hands each chunk to
``ScoringPipeline.add_many``. Faust commits an offset once its message is acknowledged; the agent takes an
extra reference on every message (``incref``) so that ``take_events``' own acknowledgement does not count,
and the pipeline releases it only when the message's output is delivered. Faust's rebalance signals drive
``assign`` (read-back recovery, awaited before the new partitions are resumed) and ``revoke``; the web server
serves ``/metrics``, ``/health`` and ``/ready`` on the metrics port.

Faust runs with transport ``kafka://`` (aiokafka): its ``confluent://`` transport received no assignment on
the embedded broker, and its ``exactly_once`` guarantee cannot start there (measured) -- exactly-once comes
from the pipeline's read-back instead. Faust's own producer is unused on the hot path (per-event ``send``
measured ~4k/s); outputs go through the pipeline's confluent-kafka producer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from streamer.config import Settings
from streamer.core.envelope import model_from_headers
from streamer.core.scoring import Request
from streamer.core.types import SourceRef
from streamer.pipeline import Consumed, ScoringPipeline

log = logging.getLogger(__name__)


def broker_credentials(client: dict[str, Any]) -> Any:
    """Translate the librdkafka security settings of ``[kafka.client]`` into Faust/aiokafka credentials."""
    protocol = str(client.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=client.get("ssl.ca.location"))
        if client.get("ssl.certificate.location"):
            context.load_cert_chain(client["ssl.certificate.location"], client.get("ssl.key.location"))
    if protocol.startswith("SASL"):
        mechanism = str(client.get("sasl.mechanism", "PLAIN")).upper()
        username, password = client.get("sasl.username", ""), client.get("sasl.password", "")
        if mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(username=username, password=password, mechanism=mechanism, ssl_context=context)
        return faust.SASLCredentials(username=username, password=password, ssl_context=context)
    return faust.SSLCredentials(context)


def tune_fetch_wait(fetch_wait_max_ms: int) -> None:
    """Make Faust's consumer ask for data every ``fetch_wait_max_ms`` instead of its hard-coded 1,500 ms.

    faust-streaming builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change it.
    A broker that answers a fetch only when that wait is over (the embedded one does, measured) then adds up to
    1.5 s to every request; with it at 5 ms the demo's p50 goes from ~970 ms to a few ms. The consumer reads
    the value at start, so it is set right after Faust constructs it.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = getattr(AIOKafkaConsumerThread, "_streamer_original_create", None)
    if original is None:
        original = AIOKafkaConsumerThread._create_worker_consumer
        AIOKafkaConsumerThread._streamer_original_create = original  # type: ignore[attr-defined]

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_wait_max_ms
        log.debug("faust consumer fetch wait set to %s ms", fetch_wait_max_ms)
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def build_app(
    settings: Settings,
    bootstrap: str,
    web_port: int,
    make_pipeline: Callable[[Callable[[Any], None]], Awaitable[ScoringPipeline]],
    metrics_page: Callable[[], bytes],
    metrics_content_type: str,
    on_failure: Callable[[BaseException], None],
) -> faust.App:
    kafka, worker, topics = settings.kafka, settings.worker, settings.topics
    tune_fetch_wait(kafka.fetch_wait_max_ms)
    app = faust.App(
        worker.group_id,
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        broker_credentials=broker_credentials(kafka.client),
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=kafka.rebalance_timeout_ms / 1000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=True,
        web_port=web_port,
        web_bind="0.0.0.0",
        web_host="127.0.0.1",
        datadir=str(Path(settings.dev.state_dir) / "faust-data"),
        stream_buffer_maxsize=max(4096, worker.batch_max_size * 8),
        # Faust's own wait on revoke/stop counts messages it dropped from its buffers itself and so waits for the
        # whole session timeout (measured: 13 s to stop with a backlog). The pipeline drains exactly what it was
        # handed and commits after, in the handlers below.
        stream_wait_empty=False,
        producer_linger_ms=kafka.linger_ms,
    )
    state: dict[str, Any] = {}
    ready = asyncio.Event()
    _add_pages(app, state, ready, metrics_page, metrics_content_type)

    def ack(message: Any) -> None:
        message.ack(app.consumer)

    def highwater(partition: int) -> int | None:
        try:
            return app.consumer.highwater(TP(topics.requests, partition))
        except Exception:  # not assigned (any more), or the consumer is not started
            return None

    async def pipeline() -> ScoringPipeline:
        if "pipeline" not in state:
            state["pipeline"] = await make_pipeline(ack)
            state["pipeline"].highwater = highwater
            state["pipeline"].start()
            watcher = asyncio.get_running_loop().create_task(state["pipeline"].wait_failed())
            watcher.add_done_callback(lambda f: on_failure(f.result()) if not f.cancelled() else None)
        return state["pipeline"]

    requests = app.topic(topics.requests, key_serializer="raw", value_serializer="raw", key_type=None, value_type=None)

    @app.agent(requests, name="score")
    async def score(stream: faust.StreamT) -> None:
        scoring = await pipeline()
        async for events in stream.take_events(max(worker.batch_max_size, 1000), within=0.001):
            consumed = []
            for event in events:
                message = event.message
                message.incref()  # released by the pipeline after delivery, not by take_events
                headers = _header_list(message.headers)
                source = SourceRef(message.topic, message.partition, message.offset)
                timestamp_ms = int((message.timestamp or 0) * 1000)
                request = Request(source, message.value, model_from_headers(headers), timestamp_ms)
                consumed.append(Consumed(request, message.key, headers, message))
            await scoring.add_many(consumed)

    def ours(tps: set[TP]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == topics.requests)

    async def commit() -> None:
        try:
            await app.consumer.commit()
        except Exception as exc:  # the next owner re-reads from the last commit and de-duplicates by read-back
            log.warning("commit after drain failed: %r", exc)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        if "pipeline" in state:
            await state["pipeline"].revoke(ours(revoked))
            await commit()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        scoring = await pipeline()
        await scoring.revoke([p for p in scoring.assigned if p not in ours(assigned)])
        await scoring.assign(ours(assigned))
        ready.set()

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **_: Any) -> None:
        if "pipeline" in state:
            try:
                await asyncio.wait_for(state["pipeline"].stop(), timeout=20)
                await commit()
            except TimeoutError:
                log.warning("in-flight batches abandoned at shutdown; their requests will be re-read and de-duplicated")

    return app


def _add_pages(
    app: faust.App,
    state: dict[str, Any],
    ready: asyncio.Event,
    metrics_page: Callable[[], bytes],
    metrics_content_type: str,
) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=, so the exposition's full type goes in as a header
        return web.bytes(metrics_page(), headers={"Content-Type": metrics_content_type})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def readiness(web: Any, request: Any) -> Any:
        if ready.is_set() and "pipeline" in state:
            return web.json({"status": "ready", "partitions": state["pipeline"].assigned})
        return web.json({"status": "starting"}, status=503)
