"""The Faust engine: a Faust app whose agent feeds the request topic into the shared scoring pipeline.

The agent consumes raw bytes (``raw`` key and value serializers) with ``take_events`` (``IntakePolicy.chunk``
events, waiting at most ``handover_wait_s``), so key, headers, partition, offset and timestamp of every message
stay known; each chunk becomes one ``Records`` per partition (``adapters.faust_consumer.records_of``) and goes
to the shell with the intake's verdict (``engines.common``: drained when the chunk's partitions are at their
high watermarks; under a backlog the fetch wait goes from ``kafka.fetch_wait_max_ms`` to
``kafka.fetch_wait_backlog_ms``, which aiokafka applies to its next fetch, and chunks are gathered -- up to
``IntakePolicy.chunk`` records within ``BACKLOG_GATHER_S`` -- before they are handed over, so that batches fill
instead of closing every few rows: ``core.intake``; what is gathered is handed over before a revocation).
The request topic is declared with ``acks=False``: Faust keeps no per-message acknowledgement bookkeeping for
it and never commits it by itself; the shell's commit path commits exactly what the ledgers say, every second
and before partitions go, through the adapter's consumer. Faust's rebalance signals drive ``assign``
(read-back recovery, awaited before the new partitions are resumed) and ``revoke`` (finish, then commit); the
web server serves ``/metrics``, ``/health`` and ``/ready`` on the metrics port, with the shell's readiness.

Faust runs with transport ``kafka://`` (aiokafka), tuned through ``adapters.faust_consumer`` (the one place
that reaches into Faust's and aiokafka's internals): its ``confluent://`` transport received no assignment on
the embedded broker, and its ``exactly_once`` guarantee cannot start there (measured) -- exactly-once comes
from the pipeline's read-back instead. Faust's own producer is unused on the hot path (per-event ``send``
measured ~4k/s); outputs go through the pipeline's confluent-kafka producer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from streamer import logs
from streamer.adapters import faust_consumer
from streamer.adapters.faust_consumer import FetchTuning, StreamerWorker, TunedApp
from streamer.core.intake import BACKLOG_GATHER_S
from streamer.core.kafka_faults import kind_of_code
from streamer.core.types import Records
from streamer.engines.common import HEALTH_BODY, Shell, WorkerContext
from streamer.wiring import signals

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
FAULTS_INTERVAL_S = 1.0
FLUSH_AFTER_S = 2 * BACKLOG_GATHER_S  # the agent hands over within BACKLOG_GATHER_S of a backlog's next chunk


@dataclass(slots=True)
class Gathered:
    """Records consumed under a backlog and not handed to the shell yet (``IntakePolicy.gather``); ``since``:
    when the first of them was consumed (the pipeline's clock), which the ledgers count their wait from."""

    chunk: list[Records] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0
    flush: asyncio.TimerHandle | None = None  # the hand-over due at the latest, while records are held

    def add(self, chunk: list[Records], rows: int, consumed_at: float) -> None:
        if self.rows == 0:
            self.since = consumed_at
        self.chunk += chunk
        self.rows += rows

    def take(self) -> tuple[list[Records], float]:
        if self.flush is not None:
            self.flush.cancel()
            self.flush = None
        chunk, since = self.chunk, self.since
        self.chunk, self.rows = [], 0
        return chunk, since


def build_app(context: WorkerContext) -> TunedApp:
    settings = context.settings
    kafka, worker, topics = settings.kafka, settings.worker, settings.topics
    intake = context.intake(adjusts_fetch_wait=True)  # aiokafka reads the fetch wait for every fetch it builds
    app = TunedApp(
        worker.group_id,
        fetch_tuning=FetchTuning(kafka.fetch_wait_max_ms, read_committed=True),
        broker=[f"kafka://{host.strip()}" for host in context.bootstrap.split(",")],
        broker_credentials=faust_consumer.broker_credentials(kafka.client),
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
        # take_events needs room for a whole chunk in the stream's buffer
        stream_buffer_maxsize=max(4096, intake.chunk),
        # Faust's own wait on revoke/stop counts messages it dropped from its buffers itself and so waits for the
        # whole session timeout (measured: 13 s to stop with a backlog). The pipeline drains exactly what it was
        # handed and commits after, in the handlers below.
        stream_wait_empty=False,
        producer_linger_ms=kafka.linger_ms,
    )
    shell = Shell(context, intake, lambda partition: faust_consumer.highwater(app, topics.requests, partition))
    _add_pages(app, context)

    async def commit(offsets: dict[int, int]) -> bool:
        return await faust_consumer.commit(app, topics.requests, offsets)

    def started() -> Shell:
        if not shell.started:
            shell.start()
            shell.commit_every(commit, COMMIT_INTERVAL_S)
            shell.subscribed()
            watching.append(asyncio.get_running_loop().create_task(watch_faults(), name="streamer-faults"))
        return shell

    watching: list[asyncio.Task[None]] = []  # held: the loop keeps only weak references to tasks

    async def watch_faults() -> None:
        """Every second: a group error aiokafka holds, and the assigned partitions' positions (fault watch)."""
        pipeline = shell.pipeline
        while True:
            await asyncio.sleep(FAULTS_INTERVAL_S)
            try:
                error = faust_consumer.group_error(app)
                kind = kind_of_code(getattr(error, "errno", 0)) if error is not None else None
                if kind is not None and context.faults is not None:
                    context.faults.seen(kind, context.group, f"{type(error).__name__}: {error}")
                assigned = pipeline.assigned
                shell.fetched(await faust_consumer.positions(app, topics.requests, assigned), pipeline.has_room())
            except Exception:  # the consumer is being replaced or stopped: the next round asks again
                log.debug("fault sample skipped", exc_info=True)

    # acks=False: Faust keeps no acknowledgement bookkeeping for the request topic and never commits it on its
    # own; the shell commits exactly what the ledgers say, after delivery.
    requests = app.topic(
        topics.requests, key_serializer="raw", value_serializer="raw", key_type=None, value_type=None, acks=False
    )

    gathered = Gathered()
    handing_over = asyncio.Lock()  # hand-overs in the order their records were taken from ``gathered``
    flushes: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references to tasks

    async def hand_over(drained: bool) -> None:
        """Hand what was gathered to the shell: from the agent, before a revocation, and at the latest
        ``FLUSH_AFTER_S`` after gathering began (a backlog that stops coming never holds records)."""
        async with handing_over:
            chunk, consumed_at = gathered.take()
            if chunk:
                await shell.add(chunk, drained, consumed_at)

    def flush_later() -> None:
        gathered.flush = None
        task = asyncio.get_running_loop().create_task(hand_over(False), name="streamer-gathered")
        flushes.add(task)
        task.add_done_callback(flushes.discard)

    @app.agent(requests, name="score")
    async def score(stream: faust.StreamT) -> None:
        started()
        current_wait = kafka.fetch_wait_max_ms
        async for events in stream.take_events(intake.chunk, within=intake.handover_wait_s):
            consumed_at = time.monotonic()  # the pipeline's clock
            chunk = faust_consumer.records_of(events)
            verdict = shell.judge(chunk, len(events))
            wanted = verdict.fetch_wait_ms
            if wanted is not None and wanted != current_wait and app.tuned_consumer.set_fetch_wait(wanted):
                log.debug("fetch wait %s ms -> %s ms", current_wait, wanted)
                current_wait = wanted
            gathered.add(chunk, len(events), consumed_at)
            if not intake.gather(verdict, gathered.rows, consumed_at - gathered.since):
                await hand_over(verdict.drained)
            elif gathered.flush is None:
                gathered.flush = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, flush_later)

    def ours(tps: set[TP]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == topics.requests)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        if shell.started:
            shell.rebalancing()
            await hand_over(False)  # what was consumed before the revocation is finished and committed with it
            await shell.revoke(ours(revoked), commit)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        pipeline = started().pipeline
        await shell.revoke([p for p in pipeline.assigned if p not in ours(assigned)], commit)
        await shell.assign(ours(assigned))

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **_: Any) -> None:
        shell.stopping()
        if shell.started:
            await shell.stop(commit, worker.drain_timeout_s)

    return app


def _add_pages(app: faust.App, context: WorkerContext) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # Rendering the registry takes milliseconds of Python (measured): on a thread, not on the event loop.
        page = await asyncio.get_running_loop().run_in_executor(None, context.metrics.exposition)
        # aiohttp refuses a charset inside content_type=, so the exposition's full type goes in as a header
        return web.bytes(page, headers={"Content-Type": context.metrics_content_type})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(HEALTH_BODY)

    @app.page("/ready")
    async def readiness(web: Any, request: Any) -> Any:
        status, body = context.readiness.answer()
        return web.json(body, status=status)


def run_faust_engine(context: WorkerContext) -> None:
    app = build_app(context)
    signals.exit_if_requested("building the Faust app")
    worker = StreamerWorker(
        app,
        loglevel=logs.level(),
        logging_config=logs.dict_config(),
        quiet=True,
        redirect_stdouts=False,
        requested=lambda: signals.STOP.requested,
    )
    try:
        worker.execute_from_commandline()
    finally:  # Faust's loop removed its handlers as it closed: the default action would be back until the exit
        signals.exiting()
