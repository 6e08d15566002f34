"""confluent-kafka's consumer, as the batch engine reads it: messages -> ``Records``, and the cached end offsets.

Both calls run on the thread that owns the consumer (librdkafka's handle is busy while a rebalance callback
waits for the event loop, so no other thread may call into it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamer.core.types import Records

log = logging.getLogger(__name__)


def records_of(topic: str, messages: Sequence[Message]) -> list[Records]:
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


def cached_highwater(consumer: Consumer, topic: str, partition: int) -> int | None:
    """The partition's high watermark from the last fetch response (no request to the broker); None before
    the first (librdkafka reports an invalid, negative offset then)."""
    try:
        marks = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
    except KafkaException:  # not assigned (any more)
        return None
    return marks[1] if marks is not None and marks[1] >= 0 else None
