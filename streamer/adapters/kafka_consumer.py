"""confluent-kafka's consumer, as the batch engine reads it: messages -> ``Records``, the cached end offsets, the
errors that are faults (``core.kafka_faults``) and the partitions' positions from librdkafka's statistics.

All of it runs on the thread that owns the consumer (librdkafka's handle is busy while a rebalance callback
waits for the event loop, so no other thread may call into it; the statistics callback is served by
``consume``/``poll`` on that thread).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamer.core.kafka_faults import AUTHORIZATION, TOPIC_MISSING, kind_of_code
from streamer.core.types import Records

log = logging.getLogger(__name__)


# librdkafka's own codes for conditions the broker reports with protocol codes elsewhere
LOCAL_KINDS = {
    KafkaError._UNKNOWN_TOPIC: TOPIC_MISSING,
    KafkaError._UNKNOWN_PARTITION: TOPIC_MISSING,
    KafkaError._AUTHENTICATION: AUTHORIZATION,
}
GROUP_CODES = {KafkaError.INCONSISTENT_GROUP_PROTOCOL, KafkaError.GROUP_AUTHORIZATION_FAILED}

Fault = Callable[[str, str, str], None]  # (kind, subject, detail): a sighting of a fault (core.kafka_faults)


def fault_of(error: KafkaError, topic: str, group: str) -> tuple[str, str] | None:
    """(kind, subject) of a consumer error that is a fault, or None (an error librdkafka recovers from itself)."""
    code = error.code()
    kind = LOCAL_KINDS.get(code) if code < 0 else kind_of_code(code)
    if kind is None:
        return None
    if code in GROUP_CODES:
        return kind, group
    if kind == TOPIC_MISSING or code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return kind, f"topic {topic}"
    return kind, "the consumer"


def records_of(
    topic: str, messages: Sequence[Message], on_fault: Fault | None = None, group: str = ""
) -> list[Records]:
    """One ``Records`` per partition of a consumed chunk, in consumption order; errors are logged and skipped,
    and those that are faults reported to ``on_fault``."""
    by_partition: dict[int, Records] = {}
    for message in messages:
        if message.error() is not None:
            error = message.error()
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error on %s[%s]: %s", message.topic(), message.partition(), error)
                fault = fault_of(error, topic, group)
                if fault is not None and on_fault is not None:
                    on_fault(fault[0], fault[1], error.str())
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


def cached_highwater(consumer: Consumer, topic: str, partition: int) -> int | None:
    """The partition's high watermark from the last fetch response (no request to the broker); None before
    the first (librdkafka reports an invalid, negative offset then)."""
    try:
        marks = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
    except KafkaException:  # not assigned (any more)
        return None
    return marks[1] if marks is not None and marks[1] >= 0 else None


Positions = dict[int, tuple[int | None, int | None]]


def positions_of(statistics: str, topic: str) -> Positions:
    """``{partition: (position, end)}`` of the partitions the consumer wants, from librdkafka's statistics JSON:
    the position is the application's (past transaction markers, which no record carries: measured on the
    embedded broker, 6 after five records and their marker), or the fetcher's before the first record; the end
    is the last stable offset (this consumer reads committed data only). None where librdkafka knows no value."""
    try:
        partitions = json.loads(statistics)["topics"][topic]["partitions"]
    except (KeyError, TypeError, ValueError):
        return {}
    found: Positions = {}
    for number, entry in partitions.items():
        if number == "-1" or not entry.get("desired"):
            continue
        position = next((o for o in (entry.get("app_offset"), entry.get("next_offset")) if _valid(o)), None)
        end = entry.get("ls_offset")
        found[int(number)] = (position, end if _valid(end) else None)
    return found


def _valid(offset: object) -> bool:
    return isinstance(offset, int) and offset >= 0
