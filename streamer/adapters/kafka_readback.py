"""The read-back that makes restarts exact: the recovery half of exactly-once.

Every output carries its request's source coordinates (headers ``streamer-source-topic/-partition/-offset``).
When a worker is assigned a partition of the request topic it re-reads from the group's committed position,
and some of those requests may already have their outputs in the log (written by an owner that crashed or was
fenced before it committed). ``read_back`` reads the tails of the output partitions and returns, per source
partition, a ``ReadBack``: the highest source offset in the predictions log and in the dead-letter log, and
the exact set of source offsets at or above the committed position found in either log. The ledger skips a
re-read request exactly when its offset is in that set -- whatever its kind is now, so a request whose
outcome changed across the restart (a version added, a transient failure) is neither answered twice nor lost.

Without a committed position (a new group) the set is not listed and the watermarks alone decide, per kind.

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
from streamer.core.errors import OutputError
from streamer.core.headers import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from streamer.core.ledger import ReadBack

log = logging.getLogger(__name__)


def _source_of(message: Message) -> tuple[str, int, int] | None:
    headers = dict(message.headers() or ())
    try:
        return headers[SOURCE_TOPIC].decode(), int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET])
    except (KeyError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def read_back(
    bootstrap: str,
    client: dict[str, Any],
    group_id: str,
    source_topic: str,
    predictions_topic: str,
    dlq_topic: str,
    partitions: Iterable[int],
    *,
    tail: int = 64,
    idle_s: float = 0.3,
    timeout_s: float = 20.0,
    max_window: int = 65_536,
) -> dict[int, ReadBack]:
    """What each output log already holds for each assigned partition of ``source_topic`` (see the module).

    Reads back the last ``tail`` records of each output partition, widening the window (x4) for those whose
    window does not yet reach below the committed position (or, without one, holds no output of this source),
    until it does, the partition's start is reached, or the window reaches ``max_window`` records with an
    output of this source in it. A window capped before it reached the committed position (offsets reset far
    back, a stale commit) cannot list every answered offset: that partition falls back to the watermarks
    (known: the window holds this source's latest outputs), with a warning, instead of reading a whole log into
    memory or failing the assignment.
    """
    partitions = list(partitions)
    committed = committed_positions(bootstrap, client, group_id, source_topic, partitions, timeout_s)
    outputs = [predictions_topic, dlq_topic]
    found, capped = _outputs(bootstrap, client, source_topic, outputs, committed, tail, idle_s, timeout_s, max_window)
    result: dict[int, ReadBack] = {}
    for p in partitions:
        predictions, dead_letters = found.get((predictions_topic, p), set()), found.get((dlq_topic, p), set())
        position = committed.get(p)
        marks = ReadBack(max(predictions, default=-1), max(dead_letters, default=-1))
        if position is not None and any((topic, p) in capped for topic in outputs):
            log.warning(
                "partition %s: the outputs of %s from its committed position %s on span more than %s records; "
                "re-read requests are skipped by the per-kind watermarks",
                p,
                source_topic,
                position,
                max_window,
            )
        elif position is not None:
            answered = frozenset(o for o in predictions | dead_letters if o >= position)
            marks = ReadBack(marks.prediction, marks.dead_letter, answered, position - 1)
        result[p] = marks
    return result


def committed_positions(
    bootstrap: str, client: dict[str, Any], group_id: str, topic: str, partitions: list[int], timeout_s: float
) -> dict[int, int | None]:
    """The group's committed position of each partition (None: never committed). An offset fetch only: the
    consumer never subscribes, so it never joins the group."""
    consumer = Consumer(client_config(bootstrap, client, **{"group.id": group_id, "enable.auto.commit": False}))
    try:
        positions = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s)
    except KafkaException as exc:
        raise OutputError(f"cannot read the committed positions of {topic} for group {group_id}: {exc}") from None
    finally:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
    for tp in positions:  # an error is not "never committed": that would drop the exact list silently
        if tp.error is not None:
            raise OutputError(f"cannot read the committed position of {topic}[{tp.partition}]: {tp.error}")
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in positions}


def _outputs(
    bootstrap: str,
    client: dict[str, Any],
    source_topic: str,
    output_topics: list[str],
    committed: dict[int, int | None],
    tail: int,
    idle_s: float,
    timeout_s: float,
    max_window: int,
) -> tuple[dict[tuple[str, int], set[int]], set[tuple[str, int]]]:
    """The source offsets of ``source_topic`` found in each (output topic, partition), read from a window wide
    enough to reach below the committed position (or to hold one output of this source without one); and the
    (output topic, partition) whose window was capped at ``max_window`` before it got there."""
    wanted = [(topic, p) for topic in output_topics for p in committed]
    found: dict[tuple[str, int], set[int]] = {}
    capped: set[tuple[str, int]] = set()
    if not wanted:
        return found, capped
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
            read = _read_from(consumer, starts, source_topic, idle_s, deadline)
            still: list[tuple[str, int]] = []
            for key, start in starts.items():
                low, _ = consumer.get_watermark_offsets(TopicPartition(*key), cached=False, timeout=timeout_s)
                offsets = read.get(key, set())
                position = committed[key[1]]
                reached = min(offsets) < position if position is not None and offsets else bool(offsets)
                if reached or start <= low:
                    found[key] = offsets
                elif window >= max_window and offsets:  # the watermark is known; the full list would be too long
                    found[key] = offsets
                    capped.add(key)
                else:
                    still.append(key)
            pending = still
            window *= 4
    finally:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
    return found, capped


def _read_from(
    consumer: Consumer,
    starts: dict[tuple[str, int], int],
    source_topic: str,
    idle_s: float,
    deadline: float,
) -> dict[tuple[str, int], set[int]]:
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    seen: dict[tuple[str, int], set[int]] = {}
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
            seen.setdefault((message.topic(), message.partition()), set()).add(source[2])
    consumer.unassign()
    return seen
