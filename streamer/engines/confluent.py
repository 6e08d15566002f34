"""The batch engine: a confluent-kafka consume loop feeding the same scoring pipeline as the Faust agent.

Measured here: a Faust agent tops out at a few thousand events/s because Faust spends tens of microseconds per
message in its consumer machinery, while ``Consumer.consume(num_messages=...)`` hands over thousands of
messages for about the price of one call. This engine keeps everything else identical -- the shell
(``engines.common``: pipeline, failure watcher, intake decisions, ``/ready``, the commit path), batching,
decoding, scoring, reorder, keyed emit to the request's partition, dead letters, read-back recovery -- and
differs only in the consume loop, the rebalance callbacks and its HTTP server (no Faust at all).

The loop runs on a thread of its own (librdkafka calls block). Each chunk (``take``: under a backlog up to
``IntakePolicy.chunk`` records within ``handover_wait_s``, otherwise the first record at once with what is
buffered behind it) is cut into one ``Records`` per partition and handed to the
pipeline on the asyncio loop with the intake's verdict (drained: the chunk's partitions are at their high
watermarks). librdkafka's fetch wait is fixed when its consumer is created, so this engine keeps
``kafka.fetch_wait_max_ms`` (``core.intake``). Rebalance callbacks run inside ``consume()`` on that thread:
``on_assign`` waits for the read-back before returning, so no record of a new partition is consumed before its
outputs were read back; ``on_revoke`` has the pipeline finish what it holds and commits its final positions
synchronously before the partitions go; ``on_lost`` drops them without committing. When the pipeline is full
the loop stops consuming -- memory stays bounded by the pipeline's limit plus librdkafka's prefetch
(``queued.max.messages.kbytes``) -- and, if that lasts, pauses its partitions and keeps polling so that the
group is served (a pause purges the prefetched records, so it is not done for every blip).

Broker pauses: librdkafka gives up its own group membership after ``session.timeout.ms`` without an answer from
the coordinator (aiokafka, under the Faust engine, has no such clock: it keeps its member id), and rejoins as a new
member. A rejoin costs seconds on any broker: measured on the embedded one after a 20 s SIGSTOP with the 6 s
default, 11.6 s from the broker's resumption to the first new output -- the heartbeat left in flight when the
broker stopped is read when it resumes and revives the abandoned member, which is elected leader and never
syncs, so the new member waits out a 3 s follower pause, a failed SyncGroup and a second join (static membership:
6.6 s; evicting the abandoned member with a LeaveGroup: 3.5-4 s). With ``kafka.session_timeout_ms`` above the
pause the membership survives it and the worker resumes in under 0.1 s (``tests/chaos/test_faults.py``); the
price is a longer wait before a killed worker's partitions move (docs/operations.md, tuning group timeouts).

Commits: every ``commit_interval_s`` the loop commits what the ledgers say (the shell's commit path). With
``kafka.transactional`` outputs and those offsets are committed in one transaction every
``transaction_interval_ms`` (``send_offsets_to_transaction`` with the consumer's group metadata, so a worker
that lost its partitions -- a zombie -- is fenced on Apache Kafka).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streamer.adapters.http_endpoints import Endpoints
from streamer.adapters.kafka_admin import client_config
from streamer.adapters.kafka_consumer import cached_highwater, positions_of, records_of
from streamer.core.errors import OutputError
from streamer.engines.common import OnLoop, Shell, WorkerContext, fail, lose, run_on_loop
from streamer.wiring import signals

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
WATERMARKS_INTERVAL_S = 1.0
STATISTICS_INTERVAL_MS = 1000


def take(consumer: Consumer, chunk: int, wait_s: float, behind: bool) -> list[Message]:
    """The next chunk: under a backlog (``behind``) up to ``chunk`` records within ``wait_s`` -- few, large
    hand-overs; otherwise the first record as soon as it comes and whatever else is already buffered. librdkafka's
    ``consume(n, timeout)`` returns early only once ``n`` records are there: at light load it held every chunk
    for the whole wait, a hold the relay of the same broker does not pay twice (``core.intake``)."""
    if behind:
        return consumer.consume(num_messages=chunk, timeout=wait_s)
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=chunk - 1, timeout=0)]


class BatchConsumeLoop:
    def __init__(self, context: WorkerContext, commit_interval_s: float = COMMIT_INTERVAL_S) -> None:
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
                # the partitions' positions and last stable offsets, for the fault watch (served by consume/poll
                # on the consume thread: a few kB of JSON a second)
                "statistics.interval.ms": STATISTICS_INTERVAL_MS,
                "stats_cb": self._on_statistics,
            },
        )
        self._sink = context.sink
        self._session_timeout_ms = kafka.session_timeout_ms
        # In transactional mode a commit is also what makes outputs visible to read_committed consumers.
        self._commit_interval_s = (
            kafka.transaction_interval_ms / 1000 if self._sink.transactional else commit_interval_s
        )
        # Written on the consume thread only, read by the loop's lag report: the loop never calls the consumer.
        self._highwater: dict[int, int | None] = {}
        # librdkafka reads fetch.wait.max.ms once, when the consumer is created: the fetch wait is fixed
        self.shell = Shell(context, context.intake(adjusts_fetch_wait=False), self._highwater.get)
        self._pause_after_s = min(1.0, kafka.rebalance_timeout_ms / 4000)
        self._commit_future: concurrent.futures.Future[None] | None = None
        self._running = False
        self._wanting = True  # the loop asks for records (no backpressure): read by the statistics callback
        self._thread: threading.Thread | None = None
        self._on_loop: OnLoop[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, on_error: Callable[[BaseException], None]) -> None:
        self._loop, self._on_loop = loop, run_on_loop(loop)
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
        self.shell.stopping()
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------------------------------ the loop

    def _run(self) -> None:
        assert self._on_loop is not None
        on_loop, shell, topic = self._on_loop, self.shell, self._topic
        pipeline = shell.pipeline
        consumer = Consumer(self._config)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            on_loop(shell.assign([tp.partition for tp in partitions]))

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            shell.rebalancing()
            shell.revoke_from_thread(on_loop, [tp.partition for tp in partitions], self._final_commit(c))

        def on_lost(c: Consumer, partitions: list[TopicPartition]) -> None:
            shell.rebalancing()
            numbers = [tp.partition for tp in partitions]
            if self._sink.transactional:
                # The open transaction holds outputs of the lost partitions, which their new owner may write as
                # well: committing it would duplicate them. Exit without committing it; the broker aborts it.
                error = OutputError(
                    f"partitions {numbers} lost (session expired) with outputs in the open transaction; exiting "
                    "without committing it, the new owner reads back",
                    topic=topic,
                )
                fail(on_loop, pipeline, error)
                return
            log.warning(
                "partitions %s lost: no answer from the group coordinator for kafka.session_timeout_ms = %s "
                "(a broker pause?); rejoining, the new owner reads back their outputs. To ride out longer pauses "
                "without a rejoin, raise kafka.session_timeout_ms above them",
                numbers,
                self._session_timeout_ms,
            )
            lose(on_loop, pipeline, numbers)

        def highwater(partition: int) -> int | None:
            high = self._highwater[partition] = cached_highwater(consumer, topic, partition)
            return high

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        shell.subscribed()
        faults = self.shell.context.faults
        on_fault = faults.seen if faults is not None else None
        group = self.shell.context.group
        last_commit = last_watermarks = time.monotonic()
        paused = False
        behind = False  # the last chunk's verdict: wait for a full chunk (backlog) or hand over at the first record
        full_since: float | None = None
        try:
            while self._running:
                if not pipeline.has_room():
                    # Brief backpressure: just do not consume (librdkafka bounds its prefetch by itself). Pausing
                    # purges the prefetched records (measured: pausing at every blip cost a fifth of the rate),
                    # so partitions are paused only when it lasts, to keep serving the group meanwhile.
                    now = time.monotonic()
                    self._wanting = False
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
                self._wanting = True
                if paused:
                    consumer.resume(consumer.assignment())
                    paused = False
                messages = take(consumer, shell.intake.chunk, shell.intake.handover_wait_s, behind)
                if messages:
                    consumed_at = time.monotonic()  # the pipeline's clock
                    chunk = records_of(topic, messages, on_fault, group)
                    if chunk:
                        verdict = shell.judge(chunk, len(messages), highwater)
                        behind = verdict.behind
                        on_loop(shell.add(chunk, verdict.drained, consumed_at))
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    self._commit(consumer)
                    last_commit = time.monotonic()
                if time.monotonic() - last_watermarks >= WATERMARKS_INTERVAL_S:
                    for tp in consumer.assignment():
                        highwater(tp.partition)
                    last_watermarks = time.monotonic()
            shell.stop_from_thread(on_loop, self._final_commit(consumer))
        finally:
            consumer.close()

    def _on_statistics(self, statistics: str) -> None:
        """librdkafka's statistics (consume thread): the assigned partitions' positions, for the fault watch."""
        self.shell.fetched(positions_of(statistics, self._topic), self._wanting)

    def _commit(self, consumer: Consumer) -> None:
        """Commit what the ledgers say may be committed (in transactional mode, with the open transaction)."""
        if not self._sink.transactional:
            assert self._on_loop is not None
            self.shell.commit_moved_from_thread(self._on_loop, self._commit_offsets(consumer, asynchronous=True))
            return
        # Outputs and offsets in one transaction; the sink produces nothing while it commits (outputs released
        # meanwhile go into the next one). An empty offset list still commits, to make the outputs written since
        # visible. Not waited for: the loop scores (and this thread consumes) while the transaction commits; the
        # next commit starts only once this one is over.
        if self._commit_future is None or self._commit_future.done():
            if self._commit_future is not None:
                self._commit_future.result()  # a failed commit raises here: the worker stops
            metadata = consumer.consumer_group_metadata()
            assert self._loop is not None
            self._commit_future = asyncio.run_coroutine_threadsafe(self._commit_transaction(metadata), self._loop)

    async def _commit_transaction(self, metadata: Any) -> None:
        pipeline = self.shell.pipeline
        due = pipeline.commits()
        await self._sink.commit_transaction(self._partitions(due), metadata)
        pipeline.committed(due)

    def _final_commit(self, consumer: Consumer) -> Callable[[dict[int, int]], bool]:
        """The last commit of partitions that go (revocation, shutdown): synchronous, or the transaction's."""
        if not self._sink.transactional:
            return self._commit_offsets(consumer, asynchronous=False)

        def commit(final: dict[int, int]) -> bool:
            if self._commit_future is not None:
                self._commit_future.result()  # transactions commit one after the other
            assert self._on_loop is not None
            self._on_loop(self._sink.commit_transaction(self._partitions(final), consumer.consumer_group_metadata()))
            return True

        return commit

    def _commit_offsets(self, consumer: Consumer, *, asynchronous: bool) -> Callable[[dict[int, int]], bool]:
        def commit(offsets: dict[int, int]) -> bool:
            if not offsets:
                return True
            try:
                consumer.commit(offsets=self._partitions(offsets), asynchronous=asynchronous)
            except KafkaException as exc:  # not fatal: the next owner re-reads from the last commit, de-duplicated
                log.warning("commit failed: %s", exc)
                return False
            return True

        return commit

    def _partitions(self, offsets: dict[int, int]) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p, offset) for p, offset in offsets.items()]


def run_batch_engine(context: WorkerContext) -> None:
    asyncio.run(_serve(context))


async def _serve(context: WorkerContext) -> None:
    """Engine ``batch``: the confluent-kafka loop, our own HTTP endpoints, no Faust.

    Faust's consumer refuses to start with nothing to subscribe to, and this engine consumes the request topic
    itself; running Faust only for its web server would cost a second group membership and a thread for
    nothing, so the lifecycle here is plain asyncio (measured: the worker stops in about a second on SIGTERM).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals.on_stop(lambda _: loop.call_soon_threadsafe(stop.set))  # at once if one came during the start
    batch_loop = BatchConsumeLoop(context)
    pipeline = batch_loop.shell.start()
    endpoints = Endpoints(
        context.port,
        context.metrics.exposition,
        context.metrics_content_type,
        context.readiness.answer,
        host=context.settings.worker.metrics_host,
    )
    endpoints.start()
    batch_loop.start(loop, pipeline.fail)
    await stop.wait()  # a fatal error ends the process from the shell's failure watcher
    log.info("stopping: draining in-flight batches, committing")
    # The consume thread drains and commits; past worker.drain_timeout_s the worker exits without waiting for it
    # (what it held is re-read by the next owner and de-duplicated).
    await loop.run_in_executor(None, batch_loop.stop, context.settings.worker.drain_timeout_s)
    endpoints.stop()
    log.info("stopped")
