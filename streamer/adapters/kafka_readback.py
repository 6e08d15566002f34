"""The read-back that makes restarts exact: the recovery half of exactly-once.

``emitted_offsets`` reads the tails of the output partitions. Every output carries its request's source
coordinates (headers ``streamer-source-topic/-partition/-offset``). On assignment, the worker reads back the
tail of each output partition and learns the highest source offset already written there, per output topic.
A request at or below that offset already has its output in the log, so it is acknowledged without being
written again. Predictions and dead letters are separate topics, and each holds a prefix of its own
subsequence, so the watermark is kept per output topic: a request is skipped only if its own kind of output
is already there.

The embedded broker reports the high watermark as the last batch's base offset + 1 (measured), so the
read-back does not trust it as the end: it reads on until the partition has been idle for ``idle_s``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamer.adapters.kafka_admin import client_config
from streamer.core.envelope import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from streamer.core.errors import OutputError

log = logging.getLogger(__name__)


def _source_of(message: Message) -> tuple[str, int, int] | None:
    headers = dict(message.headers() or ())
    try:
        return headers[SOURCE_TOPIC].decode(), int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET])
    except (KeyError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def emitted_offsets(
    bootstrap: str,
    client: dict[str, Any],
    source_topic: str,
    output_topics: Iterable[str],
    partitions: Iterable[int],
    *,
    tail: int = 64,
    idle_s: float = 0.3,
    timeout_s: float = 20.0,
) -> dict[tuple[str, int], int]:
    """Highest source offset of ``source_topic`` written to each (output topic, partition); -1 if none.

    Reads back the last ``tail`` records of each output partition, doubling the window for the partitions
    whose window held no output of ``source_topic`` (other producers may share an output topic), until one is
    found or the partition's start is reached.
    """
    wanted = [(topic, p) for topic in output_topics for p in partitions]
    found: dict[tuple[str, int], int] = {}
    if not wanted:
        return found
    consumer = Consumer(
        client_config(
            bootstrap,
            client,
            **{
                "group.id": f"streamer-recovery-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
                "enable.partition.eof": False,
            },
        )
    )
    try:
        window = tail
        pending = list(wanted)
        deadline = time.monotonic() + timeout_s
        while pending:
            starts: dict[tuple[str, int], int] = {}
            for topic, partition in pending:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                starts[(topic, partition)] = max(low, high - window)
            best = _read_from(consumer, starts, source_topic, idle_s, deadline)
            still: list[tuple[str, int]] = []
            for key, start in starts.items():
                low, _ = consumer.get_watermark_offsets(TopicPartition(*key), cached=False, timeout=timeout_s)
                if best.get(key, -1) >= 0 or start <= low:
                    found[key] = best.get(key, -1)
                else:
                    still.append(key)
            pending = still
            window *= 4
    finally:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
    return found


def _read_from(
    consumer: Consumer,
    starts: dict[tuple[str, int], int],
    source_topic: str,
    idle_s: float,
    deadline: float,
) -> dict[tuple[str, int], int]:
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    best: dict[tuple[str, int], int] = {}
    last_data = time.monotonic()
    while time.monotonic() - last_data < idle_s:
        if time.monotonic() > deadline:
            raise OutputError(f"reading back the output partitions took longer than the timeout ({starts})")
        messages = consumer.consume(num_messages=10_000, timeout=0.05)
        if messages:
            last_data = time.monotonic()
        for message in messages:
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise OutputError(
                    f"reading back {message.topic()}[{message.partition()}]: {message.error()}",
                    topic=message.topic(),
                    partition=message.partition(),
                )
            source = _source_of(message)
            if source is None or source[0] != source_topic or source[1] != message.partition():
                continue
            key = (message.topic(), message.partition())
            if source[2] > best.get(key, -1):
                best[key] = source[2]
    consumer.unassign()
    return best
