"""A range of a topic in, and predictions to a topic out, for ``streamer batch`` (confluent-kafka).

Reading assigns the partitions directly (a throwaway group id, nothing committed: re-scoring never disturbs
the workers' group) as a ``read_committed`` consumer, like the worker, and hands each consumed chunk on as one
``Records`` per partition -- what the worker scores.

Where a partition's range ends: at ``to_offset`` (exclusive) when given, checked against the consumer's
position, so transaction markers and compaction gaps do not matter; otherwise when a consume has returned
nothing for ``idle_s``. High watermarks are not used: the embedded broker (Tansu) reports wrong ones (the last
batch's base offset + 1). Timestamps: ``from_time_ms`` starts each partition at the broker's answer to a
ListOffsets-by-timestamp (the first offset at or after it) and skips records older than it; ``to_time_ms``
ends a partition at its first record at or after it. Tansu answers every timestamp lookup with offset 0
(measured), so there the range is found by reading from the start and filtering -- slower, same records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamer.adapters.kafka_admin import LIBRDKAFKA_LOG, client_config
from streamer.batch.files import LinesChunk
from streamer.core.errors import TopicRangeError
from streamer.core.headers import source_headers
from streamer.core.types import Records


@dataclass(frozen=True, slots=True)
class TopicRange:
    topic: str
    partitions: tuple[int, ...] | None = None  # None: every partition
    from_offset: int | None = None  # None: the beginning
    to_offset: int | None = None  # exclusive; None: until idle
    from_time_ms: int | None = None
    to_time_ms: int | None = None
    idle_s: float = 2.0

    @property
    def bounded(self) -> bool:
        return self.to_offset is not None


def partition_count(bootstrap: str, client: dict[str, Any], topic: str) -> int:
    consumer = Consumer(client_config(bootstrap, client, **{"group.id": f"streamer-batch-{uuid.uuid4().hex}"}))
    try:
        return len(_partitions(consumer, topic))
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        consumer.poll(0)  # delivers the queued log lines: the cause of a connection failure
        raise TopicRangeError(f"cannot read metadata of topic {topic}: {exc}{LIBRDKAFKA_LOG.cause()}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicRangeError(f"topic {topic} does not exist")
    return sorted(described.partitions)


def _start_offsets(consumer: Consumer, span: TopicRange, partitions: list[int]) -> dict[int, int]:
    starts = {p: span.from_offset if span.from_offset is not None else OFFSET_BEGINNING for p in partitions}
    if span.from_time_ms is None:
        return starts
    try:
        found = consumer.offsets_for_times([TopicPartition(span.topic, p, span.from_time_ms) for p in partitions], 10)
    except KafkaException as exc:
        raise TopicRangeError(f"the broker cannot look offsets up by timestamp: {exc}") from None
    for tp in found:
        if tp.error is not None:
            raise TopicRangeError(f"the broker cannot look offsets up by timestamp: {tp.error}")
        # -1: no record at or after the time (start at the end); else the later of it and --from-offset.
        starts[tp.partition] = max(starts[tp.partition], tp.offset) if tp.offset >= 0 else -1  # OFFSET_END
    return starts


def read_topic(bootstrap: str, client: dict[str, Any], span: TopicRange, size: int) -> Iterator[LinesChunk]:
    """The records of ``span``, a consumed chunk at a time, one ``LinesChunk`` per partition of it."""
    consumer = Consumer(
        client_config(
            bootstrap,
            client,
            **{
                "group.id": f"streamer-batch-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100,
            },
        )
    )
    try:
        available = _partitions(consumer, span.topic)
        partitions = list(span.partitions) if span.partitions is not None else available
        unknown = sorted(set(partitions) - set(available))
        if unknown:
            raise TopicRangeError(f"topic {span.topic} has no partition {unknown[0]} (it has {len(available)})")
        starts = _start_offsets(consumer, span, partitions)
        done = {p for p in partitions if span.to_offset is not None and 0 <= span.to_offset <= max(starts[p], 0)}
        done |= {p for p in partitions if starts[p] == -1}
        consumer.assign([TopicPartition(span.topic, p, starts[p]) for p in partitions if p not in done])
        consumed = 0
        last = time.monotonic()
        while len(done) < len(partitions):
            messages = consumer.consume(num_messages=size, timeout=0.2)
            if not messages:
                if time.monotonic() - last > span.idle_s:
                    return
                continue
            last = time.monotonic()
            for records in _by_partition(span, messages, done):
                consumed += len(records)
                yield LinesChunk(records, "offset", consumed)
            if span.to_offset is not None:
                _check_ends(consumer, span, partitions, done)
            _pause(consumer, span.topic, done)
    finally:
        consumer.close()


def _by_partition(span: TopicRange, messages: list[Any], done: set[int]) -> list[Records]:
    """One ``Records`` per partition, within the range; marks the partitions whose range ended."""
    by_partition: dict[int, Records] = {}
    to_offset, from_time, to_time = span.to_offset, span.from_time_ms, span.to_time_ms
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            raise TopicRangeError(f"consuming {span.topic}[{message.partition()}]: {error}")
        partition = message.partition()
        if partition in done:
            continue
        offset = message.offset()
        if to_offset is not None and offset >= to_offset:
            done.add(partition)
            continue
        timestamp = message.timestamp()[1]
        if to_time is not None and timestamp >= to_time:
            done.add(partition)
            continue
        if from_time is not None and timestamp < from_time:
            continue
        records = by_partition.get(partition)
        if records is None:
            records = by_partition[partition] = Records(span.topic, partition, [], [], [], [], [])
        records.offsets.append(offset)
        records.keys.append(message.key())
        records.values.append(message.value())
        records.timestamps_ms.append(timestamp)
        records.headers.append(message.headers())
    return list(by_partition.values())


def _check_ends(consumer: Consumer, span: TopicRange, partitions: list[int], done: set[int]) -> None:
    """A partition whose position reached ``to_offset`` is done (even if the last offsets were markers)."""
    open_ = [TopicPartition(span.topic, p) for p in partitions if p not in done]
    if not open_:
        return
    for tp in consumer.position(open_):
        if tp.offset >= 0 and span.to_offset is not None and tp.offset >= span.to_offset:
            done.add(tp.partition)


def _pause(consumer: Consumer, topic: str, done: set[int]) -> None:
    if done:
        consumer.pause([TopicPartition(topic, p) for p in done])


class TopicWriter:
    """Predictions to a topic: keyed like their request, with the ``streamer-source-*`` headers, to the
    request's partition number when ``same_partitions`` (the output topic has as many partitions as the
    source), else to the key's partition. ``close`` waits for every delivery and raises if any failed."""

    def __init__(self, bootstrap: str, client: dict[str, Any], topic: str, same_partitions: bool) -> None:
        self._topic = topic
        self._same_partitions = same_partitions
        self._failures: list[str] = []
        self._producer = Producer(
            client_config(
                bootstrap,
                client,
                **{"enable.idempotence": True, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000},
            )
        )

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

    def produce(
        self,
        values: list[bytes],
        keys: list[bytes | None],
        partition: int | None,
        source_topic: str,
        offsets: list[int],
    ) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        headers = source_headers(source_topic, partition if partition is not None else 0, offsets)
        target = partition if partition is not None and self._same_partitions else -1
        for value, key, header in zip(values, keys, headers, strict=True):
            while True:
                try:
                    produce(self._topic, value, key, partition=target, headers=header, on_delivery=self._delivered)
                    break
                except BufferError:
                    poll(0.05)
        poll(0)

    def close(self) -> None:
        remaining = self._producer.flush(60)
        if self._failures or remaining:
            why = "; ".join(map(str, self._failures[:3])) or f"still queued after 60 s{LIBRDKAFKA_LOG.cause()}"
            raise TopicRangeError(
                f"{len(self._failures) + remaining} predictions not delivered to {self._topic}: {why}"
            )
