"""The Faust engine: a Faust app whose agent feeds the request topic into the shared scoring pipeline.

The agent consumes raw bytes (``raw`` key and value serializers) with ``take_events``, so key, headers,
partition, offset and timestamp of every message stay known, cuts each chunk into one ``Records`` per
partition and hands them to ``ScoringPipeline.add`` (a chunk shorter than asked: the consumer is drained, so
open batches close at once). The request topic is declared with ``acks=False``: Faust keeps no per-message
acknowledgement bookkeeping for it and never commits it by itself; this engine commits exactly what the
ledgers say, every second and before partitions go (through Faust's consumer, ``_commit``). Faust's rebalance
signals drive ``assign`` (read-back recovery, awaited before the new partitions are resumed) and ``revoke``
(finish, then commit); the web server serves ``/metrics``, ``/health`` and ``/ready`` on the metrics port.

Both timing decisions follow the lag (high watermark minus what was consumed, per partition of the chunk): at
no lag the consumer is drained and open batches close at once; at a lag of a chunk or more the fetch wait goes
from ``kafka.fetch_wait_max_ms`` (5 ms) to ``kafka.fetch_wait_backlog_ms`` (``core.batching.FetchWait``) -- the
embedded broker answers a fetch only when its wait is over, so short waits cost throughput exactly when there
is a backlog. (Its high watermark is the last record batch's base offset + 1, measured: the lag it gives is
short by at most one producer batch, and zero when caught up, which is what these decisions need.)

Faust runs with transport ``kafka://`` (aiokafka): its ``confluent://`` transport received no assignment on
the embedded broker, and its ``exactly_once`` guarantee cannot start there (measured) -- exactly-once comes
from the pipeline's read-back instead. Faust's own producer is unused on the hot path (per-event ``send``
measured ~4k/s); outputs go through the pipeline's confluent-kafka producer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from streamer.core.batching import FetchWait
from streamer.core.types import Records
from streamer.pipeline import ScoringPipeline

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


def tune_fetch_wait(fetch_wait_max_ms: int, read_committed: bool = False) -> None:
    """Make Faust's consumer ask for data every ``fetch_wait_max_ms`` instead of its hard-coded 1,500 ms, and
    with ``read_committed`` skip requests of aborted transactions, as the batch engine does.

    faust-streaming builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change it.
    A broker that answers a fetch only when that wait is over (the embedded one does, measured) then adds up to
    1.5 s to every request; with it at 5 ms the demo's p50 goes from ~970 ms to a few ms. Faust reads committed
    data only under its own exactly-once guarantee, which cannot start on the embedded broker. The consumer reads
    both values at start, so they are set right after Faust constructs it.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = getattr(AIOKafkaConsumerThread, "_streamer_original_create", None)
    if original is None:
        original = AIOKafkaConsumerThread._create_worker_consumer
        AIOKafkaConsumerThread._streamer_original_create = original  # type: ignore[attr-defined]

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_wait_max_ms
        if read_committed:
            consumer._isolation_level = "read_committed"
        log.debug("faust consumer fetch wait set to %s ms", fetch_wait_max_ms)
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def set_fetch_wait(app: faust.App, fetch_wait_ms: int) -> bool:
    """Change the running consumer's fetch wait (aiokafka reads it for every fetch request it builds)."""
    try:
        fetcher = app.consumer._thread._consumer._fetcher
    except AttributeError:  # not started yet
        return False
    fetcher._fetch_max_wait_ms = fetch_wait_ms
    return True


def records_of(events: list[Any]) -> list[Records]:
    """One ``Records`` per partition of a chunk of Faust events, in consumption order."""
    by_partition: dict[int, Records] = {}
    for event in events:
        message = event.message
        records = by_partition.get(message.partition)
        if records is None:
            records = by_partition[message.partition] = Records(message.topic, message.partition, [], [], [], [], [])
        records.offsets.append(message.offset)
        records.keys.append(message.key)
        records.values.append(message.value)
        records.timestamps_ms.append(int((message.timestamp or 0) * 1000))
        headers = message.headers
        records.headers.append(_header_list(headers) if headers else None)
    return list(by_partition.values())


def _header_list(headers: Any) -> list[tuple[str, bytes | None]]:
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v if isinstance(v, bytes | None) else str(v).encode()) for k, v in items]


def build_app(context: Any) -> faust.App:
    settings = context.settings
    kafka, worker, topics = settings.kafka, settings.worker, settings.topics
    tune_fetch_wait(kafka.fetch_wait_max_ms, read_committed=True)
    app = faust.App(
        worker.group_id,
        broker=[f"kafka://{host.strip()}" for host in context.bootstrap.split(",")],
        broker_credentials=broker_credentials(kafka.client),
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=kafka.rebalance_timeout_ms / 1000,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=True,
        web_port=context.port,
        web_bind=worker.metrics_host,
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
    _add_pages(app, state, context)

    def highwater(partition: int) -> int | None:
        try:
            return app.consumer.highwater(TP(topics.requests, partition))
        except Exception:  # not assigned (any more), or the consumer is not started
            return None

    def pipeline() -> ScoringPipeline:
        if "pipeline" not in state:
            scoring = state["pipeline"] = context.make_pipeline()
            scoring.highwater = highwater
            scoring.start()
            loop = asyncio.get_running_loop()
            watcher = loop.create_task(scoring.wait_failed())
            watcher.add_done_callback(lambda f: context.fatal(f.result()) if not f.cancelled() else None)
            committer = loop.create_task(_commit_every(app, scoring, topics.requests, 1.0))
            state["tasks"] = (watcher, committer)
        return state["pipeline"]

    # acks=False: Faust keeps no acknowledgement bookkeeping for the request topic and never commits it on its
    # own; the engine commits exactly what the ledgers say (``_commit``), after delivery.
    requests = app.topic(
        topics.requests, key_serializer="raw", value_serializer="raw", key_type=None, value_type=None, acks=False
    )
    chunk = max(worker.batch_max_size, 1000)
    # take_events returns after ``within`` with what it has: under a backlog a full chunk comes at once; under
    # light load a request waits at most this long for chunk-mates, within the batch's own bound.
    within_s = max(worker.batch_max_wait_ms / 1000.0, 0.001)
    fetch_wait = FetchWait(kafka.fetch_wait_max_ms, kafka.fetch_wait_backlog_ms)

    @app.agent(requests, name="score")
    async def score(stream: faust.StreamT) -> None:
        scoring = pipeline()
        current_wait = kafka.fetch_wait_max_ms
        async for events in stream.take_events(chunk, within=within_s):
            chunk_records = records_of(events)
            lag = sum(max((highwater(r.partition) or 0) - r.offsets[-1] - 1, 0) for r in chunk_records)
            # Nothing more to read for these partitions: close their batches now rather than wait for batch-mates.
            await scoring.add(chunk_records, drained=lag == 0)
            wanted = fetch_wait.update(lag >= chunk)
            if wanted != current_wait and set_fetch_wait(app, wanted):
                log.debug("fetch wait %s ms -> %s ms", current_wait, wanted)
                current_wait = wanted

    def ours(tps: set[TP]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == topics.requests)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        if "pipeline" in state:
            final = await state["pipeline"].revoke(ours(revoked))
            await _commit(app, topics.requests, final)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        scoring = pipeline()
        final = await scoring.revoke([p for p in scoring.assigned if p not in ours(assigned)])
        await _commit(app, topics.requests, final)
        await scoring.assign(ours(assigned))
        context.health.assigned = True

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **_: Any) -> None:
        if "pipeline" in state:
            try:
                final = await asyncio.wait_for(state["pipeline"].stop(), timeout=worker.drain_timeout_s)
                await _commit(app, topics.requests, final)
            except TimeoutError:
                log.warning("in-flight batches abandoned at shutdown; their requests will be re-read and de-duplicated")

    return app


async def _commit(app: faust.App, topic: str, offsets: dict[int, int]) -> bool:
    """Commit ``offsets`` (partition -> next offset to read) of ``topic`` through Faust's consumer."""
    if not offsets:
        return True
    try:
        return bool(await app.consumer._commit({TP(topic, p): offset for p, offset in offsets.items()}))
    except Exception as exc:  # the next owner re-reads from the last commit and de-duplicates by read-back
        log.warning("commit failed: %r", exc)
        return False


async def _commit_every(app: faust.App, pipeline: ScoringPipeline, topic: str, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        due = pipeline.commits()
        if due and await _commit(app, topic, due):
            pipeline.committed(due)


def _add_pages(app: faust.App, state: dict[str, Any], context: Any) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=, so the exposition's full type goes in as a header
        return web.bytes(context.metrics.exposition(), headers={"Content-Type": context.metrics_content_type})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def readiness(web: Any, request: Any) -> Any:
        state_now = context.health.readiness() if "pipeline" in state else None
        if state_now is not None:
            return web.json(state_now)
        return web.json({"status": "starting" if context.health.fatal is None else "failed"}, status=503)


def run_faust_engine(context: Any) -> None:
    from streamer import logs

    app = build_app(context)
    faust.Worker(
        app, loglevel=logs.level(), logging_config=logs.dict_config(), quiet=True, redirect_stdouts=False
    ).execute_from_commandline()
