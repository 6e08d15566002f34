"""The batch engine: a confluent-kafka consume loop feeding the same scoring pipeline as the Faust agent.

Measured here: a Faust agent tops out at a few thousand events/s because Faust spends tens of microseconds per
message in its consumer machinery, while ``Consumer.consume(num_messages=...)`` hands over thousands of
messages for about the price of one call. This engine keeps everything else identical -- batching, decoding,
scoring, reorder, keyed emit to the request's partition, dead letters, read-back recovery -- and differs only
in the consume loop, the rebalance callbacks and its own endpoints and signal handling (no Faust at all).

The loop runs on a thread of its own (librdkafka calls block). Each ``consume`` chunk is cut into one
``Records`` per partition (columns, not objects per message) and handed to the pipeline on the asyncio loop;
a chunk shorter than asked means the consumer is drained, so open batches close at once. Rebalance callbacks
run inside ``consume()`` on that thread: ``on_assign`` waits for the read-back before returning, so no record
of a new partition is consumed before its outputs were read back; ``on_revoke`` has the pipeline finish what
it holds and commits its final positions synchronously before the partitions go; ``on_lost`` drops them
without committing. When the pipeline is full the loop stops consuming -- memory stays bounded by the
pipeline's limit plus librdkafka's prefetch (``queued.max.messages.kbytes``) -- and, if that lasts, pauses its
partitions and keeps polling so that the group is served (a pause purges the prefetched records, so it is
not done for every blip).

Commits: every ``commit_interval_s`` the loop commits exactly ``pipeline.commits()`` -- the ledgers'
committable offsets -- and keeps no bookkeeping of its own. With ``kafka.transactional`` outputs and those
offsets are committed in one transaction every ``transaction_interval_ms`` (``send_offsets_to_transaction`` with
the consumer's group metadata, so a worker that lost its partitions -- a zombie -- is fenced on Apache Kafka).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamer.adapters.http_endpoints import Endpoints
from streamer.adapters.kafka_admin import client_config
from streamer.core.errors import OutputError
from streamer.core.types import Records
from streamer.pipeline import ScoringPipeline

log = logging.getLogger(__name__)


def records_of(topic: str, messages: list[Message]) -> list[Records]:
    """One ``Records`` per partition of a consumed chunk, in consumption order; errors are logged and skipped."""
    by_partition: dict[int, Records] = {}
    for message in messages:
        if message.error() is not None:
            error = message.error()
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error on %s[%s]: %s", message.topic(), message.partition(), error)
            continue
        partition = message.partition()
        records = by_partition.get(partition)
        if records is None:
            records = by_partition[partition] = Records(topic, partition, [], [], [], [], [])
        records.offsets.append(message.offset())
        records.keys.append(message.key())
        records.values.append(message.value())
        records.timestamps_ms.append(message.timestamp()[1])
        records.headers.append(message.headers())
    return list(by_partition.values())


class BatchConsumeLoop:
    def __init__(self, context: Any, commit_interval_s: float = 1.0) -> None:
        settings = context.settings
        kafka, worker = settings.kafka, settings.worker
        self._topic = settings.topics.requests
        self._config = client_config(
            context.bootstrap,
            kafka.client,
            **{
                "group.id": worker.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": kafka.session_timeout_ms,
                "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
                # librdkafka sends this as the JoinGroup rebalance timeout: how long the coordinator waits for
                # members to rejoin. Its 5-minute default kept a second worker waiting for minutes on the
                # embedded broker (measured); the loop polls every few milliseconds, so a short one is safe.
                "max.poll.interval.ms": max(kafka.rebalance_timeout_ms, kafka.session_timeout_ms),
                "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
                "queued.max.messages.kbytes": 16384,
                "isolation.level": "read_committed",
            },
        )
        # Each chunk is one hand-over to the event loop (a thread round trip): large chunks under a backlog.
        self._chunk = max(worker.batch_max_size * 8, 2000)
        # consume() returns when it has a full chunk or when this wait is over; the ledgers do the batching.
        self._wait_s = min(worker.batch_max_wait_ms / 1000.0, 0.005) or 0.001
        self._sink = context.sink
        # In transactional mode a commit is also what makes outputs visible to read_committed consumers.
        self._commit_interval_s = (
            kafka.transaction_interval_ms / 1000 if self._sink.transactional else commit_interval_s
        )
        self._highwater: dict[int, int] = {}
        self._pause_after_s = min(1.0, kafka.rebalance_timeout_ms / 4000)
        self._commit_future: concurrent.futures.Future[None] | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._pipeline: ScoringPipeline | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned = threading.Event()

    def start(
        self, pipeline: ScoringPipeline, loop: asyncio.AbstractEventLoop, on_error: Callable[[BaseException], None]
    ) -> None:
        self._pipeline, self._loop = pipeline, loop
        self._running = True

        def run() -> None:
            try:
                self._run()
            except BaseException as exc:  # surfaced to the worker, which stops
                log.exception("batch consume loop failed")
                loop.call_soon_threadsafe(on_error, exc)

        self._thread = threading.Thread(target=run, name="streamer-batch-consume", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------------------------------ the loop

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _run(self) -> None:
        assert self._pipeline is not None
        pipeline = self._pipeline
        consumer = Consumer(self._config)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._call(pipeline.assign([tp.partition for tp in partitions]))
            self.assigned.set()

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            final = self._call(pipeline.revoke([tp.partition for tp in partitions]))
            self._commit_final(c, final)

        def on_lost(c: Consumer, partitions: list[TopicPartition]) -> None:
            numbers = [tp.partition for tp in partitions]
            if self._sink.transactional:
                # The open transaction holds outputs of the lost partitions, which their new owner may write as
                # well: committing it would duplicate them. Exit without committing it; the broker aborts it.
                error = OutputError(
                    f"partitions {numbers} lost (session expired) with outputs in the open transaction; exiting "
                    "without committing it, the new owner reads back",
                    topic=self._topic,
                )
                self._call(_run_sync(pipeline.fail, error))
                return
            log.warning("partitions %s lost (session expired); the new owner reads back their outputs", numbers)
            self._call(_run_sync(pipeline.lose, numbers))

        # Read on this thread only: the consumer's handle is busy while a rebalance callback waits for the loop,
        # so the loop must never call into it (it did once: a deadlock on the first rebalance).
        pipeline.highwater = self._highwater.get
        consumer.subscribe([self._topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        last_commit = last_watermarks = time.monotonic()
        paused = False
        full_since: float | None = None
        try:
            while self._running:
                if not pipeline.has_room():
                    # Brief backpressure: just do not consume (librdkafka bounds its prefetch by itself). Pausing
                    # purges the prefetched records (measured: pausing at every blip cost a fifth of the rate),
                    # so partitions are paused only when it lasts, to keep serving the group meanwhile.
                    now = time.monotonic()
                    full_since = full_since or now
                    if now - full_since < self._pause_after_s:
                        time.sleep(0.001)
                        continue
                    if not paused:
                        consumer.pause(consumer.assignment())
                        paused = True
                    consumer.poll(0.005)  # serve the group while paused; paused partitions return nothing
                    continue
                full_since = None
                if paused:
                    consumer.resume(consumer.assignment())
                    paused = False
                messages = consumer.consume(num_messages=self._chunk, timeout=self._wait_s)
                if messages:
                    chunk = records_of(self._topic, messages)
                    self._call(pipeline.add(chunk, drained=len(messages) < self._chunk))
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    self._commit(consumer)
                    last_commit = time.monotonic()
                if time.monotonic() - last_watermarks >= 1.0:
                    for tp in consumer.assignment():
                        self._highwater[tp.partition] = consumer.get_watermark_offsets(tp, cached=True)[1]
                    last_watermarks = time.monotonic()
            final = self._call(pipeline.stop())
            self._commit_final(consumer, final)
        finally:
            consumer.close()

    def _commit(self, consumer: Consumer) -> None:
        """Commit what the ledgers say may be committed (in transactional mode, with the open transaction)."""
        assert self._pipeline is not None
        pipeline = self._pipeline
        if self._sink.transactional:
            # Outputs and offsets in one transaction; the sink produces nothing while it commits (outputs released
            # meanwhile go into the next one). An empty offset list still commits, to make the outputs written
            # since visible.
            # Not waited for: the loop scores (and this thread consumes) while the transaction commits; the next
            # commit starts only once this one is over.
            if self._commit_future is None or self._commit_future.done():
                if self._commit_future is not None:
                    self._commit_future.result()  # a failed commit raises here: the worker stops
                metadata = consumer.consumer_group_metadata()
                assert self._loop is not None
                self._commit_future = asyncio.run_coroutine_threadsafe(
                    self._commit_transaction(pipeline, metadata), self._loop
                )
            return
        due = self._call(_run_sync(pipeline.commits))
        self._commit_offsets(consumer, due, asynchronous=True)

    def _commit_final(self, consumer: Consumer, final: dict[int, int]) -> None:
        """The last commit of partitions that go (revocation, shutdown): synchronous, or the transaction's."""
        if self._sink.transactional:
            if self._commit_future is not None:
                self._commit_future.result()  # transactions commit one after the other
            offsets = [TopicPartition(self._topic, p, offset) for p, offset in final.items()]
            metadata = consumer.consumer_group_metadata()
            self._call(self._sink.commit_transaction(offsets, metadata))
        else:
            self._commit_offsets(consumer, final, asynchronous=False)

    async def _commit_transaction(self, pipeline: ScoringPipeline, metadata: Any) -> None:
        due = pipeline.commits()
        offsets = [TopicPartition(self._topic, p, offset) for p, offset in due.items()]
        await self._sink.commit_transaction(offsets, metadata)
        pipeline.committed(due)

    def _commit_offsets(self, consumer: Consumer, offsets: dict[int, int], *, asynchronous: bool) -> None:
        if not offsets:
            return
        try:
            consumer.commit(
                offsets=[TopicPartition(self._topic, p, offset) for p, offset in offsets.items()],
                asynchronous=asynchronous,
            )
        except KafkaException as exc:  # not fatal: the next owner re-reads from the last commit, de-duplicated
            log.warning("commit failed: %s", exc)
            return
        assert self._pipeline is not None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._pipeline.committed, offsets)


async def _run_sync(function: Callable[..., Any], *args: Any) -> Any:
    """Run a plain function on the loop (ledger state is the loop's: the consume thread never touches it)."""
    return function(*args)


def run_batch_engine(context: Any) -> None:
    asyncio.run(_serve(context))


async def _serve(context: Any) -> None:
    """Engine ``batch``: the confluent-kafka loop, our own HTTP endpoints and signal handling, no Faust.

    Faust's consumer refuses to start with nothing to subscribe to, and this engine consumes the request topic
    itself; running Faust only for its web server would cost a second group membership and a thread for
    nothing, so the lifecycle here is plain asyncio (measured: the worker stops in about a second on SIGTERM).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    batch_loop = BatchConsumeLoop(context)
    pipeline = context.make_pipeline()

    def readiness() -> dict[str, Any] | None:
        context.health.assigned = batch_loop.assigned.is_set()
        return context.health.readiness()

    endpoints = Endpoints(
        context.port,
        context.metrics.exposition,
        context.metrics_content_type,
        readiness,
        host=context.settings.worker.metrics_host,
    )
    endpoints.start()
    pipeline.start()
    batch_loop.start(pipeline, loop, pipeline.fail)
    failed = loop.create_task(pipeline.wait_failed())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        context.fatal(failed.result())
    log.info("stopping: draining in-flight batches, committing")
    # The consume thread drains and commits; past worker.drain_timeout_s the worker exits without waiting for it
    # (what it held is re-read by the next owner and de-duplicated).
    await loop.run_in_executor(None, batch_loop.stop, context.settings.worker.drain_timeout_s)
    endpoints.stop()
    log.info("stopped")
