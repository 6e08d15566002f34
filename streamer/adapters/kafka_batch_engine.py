"""The batch engine: a confluent-kafka consume loop feeding the same scoring pipeline as the Faust agent.

Measured here: a Faust agent tops out at a few thousand events/s because Faust spends ~75 µs per message in
its consumer machinery, while ``Consumer.consume(num_messages=...)`` hands over a thousand messages for about
the price of one call. This engine keeps everything else identical -- batching, decoding, scoring, reorder,
keyed emit to the request's partition, dead letters, read-back recovery -- and differs only in the consume
loop and the rebalance callbacks.

The loop runs on a thread of its own (librdkafka calls block) and hands each chunk to the pipeline on the
asyncio loop, waiting for it to be taken. Rebalance callbacks run inside ``consume()`` on that thread:
``on_assign`` waits for the pipeline's read-back before returning, so no message of a new partition is
consumed before its outputs were read back; ``on_revoke`` drains what the pipeline holds and commits
synchronously before the partitions go. When the pipeline is full the loop pauses its partitions and keeps
polling (so the group session stays alive) until there is room again -- memory stays bounded by the
pipeline's limit plus librdkafka's prefetch (``queued.max.messages.kbytes``).

Offsets: the pipeline acknowledges each partition's requests in offset order, after delivery; the loop
commits ``last acknowledged + 1`` per partition every ``commit_interval_s`` and at every revocation. With
``kafka.transactional`` the outputs and those offsets are committed in one transaction every
``transaction_interval_ms`` (``send_offsets_to_transaction`` with the consumer's group metadata, so a worker
that lost its partitions -- a zombie -- is fenced by the broker on Apache Kafka).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamer.adapters.kafka_admin import client_config
from streamer.adapters.kafka_output import OutputProducer
from streamer.config import Settings
from streamer.core.envelope import model_from_headers
from streamer.core.scoring import Request
from streamer.core.types import SourceRef
from streamer.pipeline import Consumed, ScoringPipeline

log = logging.getLogger(__name__)


class BatchConsumeLoop:
    def __init__(
        self, settings: Settings, bootstrap: str, producer: OutputProducer, commit_interval_s: float = 1.0
    ) -> None:
        kafka, worker = settings.kafka, settings.worker
        self._topic = settings.topics.requests
        self._config = client_config(
            bootstrap,
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
        # consume() returns when it has a full chunk or when this wait is over; the per-partition batchers do
        # the real batching, so keep it short for latency.
        self._wait_s = min(worker.batch_max_wait_ms / 1000.0, 0.005) or 0.001
        self._producer = producer
        # In transactional mode a commit is also what makes outputs visible to read_committed consumers.
        self._commit_interval_s = kafka.transaction_interval_ms / 1000 if producer.transactional else commit_interval_s
        self._acked: dict[int, int] = {}
        self._highwater: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._running = False
        self._thread: threading.Thread | None = None
        self._pipeline: ScoringPipeline | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned = threading.Event()
        self.error: BaseException | None = None

    def ack(self, token: tuple[int, int]) -> None:
        """Called by the pipeline, in offset order per partition, once a request's output is delivered."""
        partition, offset = token
        self._acked[partition] = offset

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
                self.error = exc
                on_error(exc)

        self._thread = threading.Thread(target=run, name="streamer-batch-consume", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------------------------------ the loop

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _run(self) -> None:
        assert self._pipeline is not None
        pipeline = self._pipeline
        consumer = Consumer(self._config)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            numbers = [tp.partition for tp in partitions]
            self._call(pipeline.assign(numbers))
            self.assigned.set()

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            numbers = [tp.partition for tp in partitions]
            self._call(pipeline.revoke(numbers))
            self._commit(c, numbers, asynchronous=False)
            for number in numbers:
                self._acked.pop(number, None)
                self._committed.pop(number, None)

        def on_lost(c: Consumer, partitions: list[TopicPartition]) -> None:
            numbers = [tp.partition for tp in partitions]
            log.warning("partitions %s lost (session expired); the new owner reads back their outputs", numbers)
            self._call(pipeline.revoke(numbers))
            for number in numbers:
                self._acked.pop(number, None)
                self._committed.pop(number, None)

        # Read on this thread only: the consumer's handle is busy while a rebalance callback waits for the loop,
        # so the loop must never call into it (it did once: a deadlock on the first rebalance).
        pipeline.highwater = self._highwater.get
        consumer.subscribe([self._topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        last_commit = last_watermarks = time.monotonic()
        paused = False
        try:
            while self._running:
                if not pipeline.has_room():
                    if not paused:
                        consumer.pause(consumer.assignment())
                        paused = True
                    consumer.poll(0.005)  # serve the group while paused; paused partitions return nothing
                    continue
                if paused:
                    consumer.resume(consumer.assignment())
                    paused = False
                messages = consumer.consume(num_messages=self._chunk, timeout=self._wait_s)
                if messages:
                    chunk = self._convert(messages)
                    if chunk:
                        self._call(pipeline.add_many(chunk))
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    self._commit(consumer, None, asynchronous=True)
                    last_commit = time.monotonic()
                if time.monotonic() - last_watermarks >= 1.0:
                    for tp in consumer.assignment():
                        self._highwater[tp.partition] = consumer.get_watermark_offsets(tp, cached=True)[1]
                    last_watermarks = time.monotonic()
            self._call(pipeline.stop())
            self._commit(consumer, None, asynchronous=False)
        finally:
            consumer.close()

    async def _commit_transaction(self, offsets: list[TopicPartition], metadata: Any) -> bool:
        return self._producer.commit_transaction(offsets, metadata)

    def _convert(self, messages: list[Message]) -> list[Consumed]:
        chunk: list[Consumed] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error on %s[%s]: %s", message.topic(), message.partition(), error)
                continue
            headers = message.headers() or []
            partition, offset = message.partition(), message.offset()
            _, timestamp_ms = message.timestamp()
            source = SourceRef(self._topic, partition, offset)
            request = Request(source, message.value(), model_from_headers(headers), timestamp_ms)
            chunk.append(Consumed(request, message.key(), list(headers), (partition, offset)))
        return chunk

    def _commit(self, consumer: Consumer, partitions: list[int] | None, *, asynchronous: bool) -> None:
        offsets = [
            TopicPartition(self._topic, p, offset + 1)
            for p, offset in list(self._acked.items())
            if (partitions is None or p in partitions) and self._committed.get(p) != offset
        ]
        if self._producer.transactional:
            # Outputs and offsets in one transaction, on the loop thread so that no output is produced while it
            # commits; an empty offset list still commits, to make the outputs written since visible.
            if self._call(self._commit_transaction(offsets, consumer.consumer_group_metadata())):
                for tp in offsets:
                    self._committed[tp.partition] = tp.offset - 1
            return
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=asynchronous)
            for tp in offsets:
                self._committed[tp.partition] = tp.offset - 1
        except KafkaException as exc:  # not fatal: the next owner re-reads from the last commit, de-duplicated
            log.warning("commit failed: %s", exc)
