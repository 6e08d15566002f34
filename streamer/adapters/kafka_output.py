"""The output side: one idempotent confluent-kafka producer, and the read-back that makes restarts exact.

``OutputProducer`` writes predictions and dead letters to an explicit partition (the request's partition
number) with ``enable.idempotence``: per partition, the log then holds a prefix of what was sent, in order,
without duplicates, even across retries. A background thread serves delivery callbacks; the callback given
to ``send`` runs there, and the caller marshals it to its own loop.

``emitted_offsets`` is the recovery half of exactly-once. Every output carries its request's source
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
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamer.adapters.kafka_admin import client_config
from streamer.core.errors import StreamerError

log = logging.getLogger(__name__)

SOURCE_TOPIC = "streamer-source-topic"
SOURCE_PARTITION = "streamer-source-partition"
SOURCE_OFFSET = "streamer-source-offset"

# (error, message): librdkafka's delivery report, called on the producer's poll thread.
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class OutputError(StreamerError):
    """The producer could not deliver an output; the worker must stop (and recover by read-back)."""


class OutputProducer:
    """With ``transactional_id`` every output is written inside a transaction that is always open:
    ``commit_transaction`` commits it together with the consumer offsets, and opens the next one."""

    def __init__(
        self, bootstrap: str, client: dict[str, Any], linger_ms: int = 5, transactional_id: str | None = None
    ) -> None:
        settings = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "none",
        }
        if transactional_id is not None:
            settings["transactional.id"] = transactional_id
        self._producer = Producer(client_config(bootstrap, client, **settings))
        self.transactional = transactional_id is not None
        if self.transactional:
            # Fences an earlier producer with the same id and closes (aborts) the transaction it left open.
            self._producer.init_transactions(30)
            self._producer.begin_transaction()
            log.info("transactional producer %s ready", transactional_id)
        self._running = True
        self._thread = threading.Thread(target=self._serve_callbacks, name="streamer-producer-poll", daemon=True)
        self._thread.start()

    def _serve_callbacks(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        on_delivery: DeliveryCallback,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    headers=headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:  # local queue full: let deliveries drain it
                time.sleep(0.001)

    def commit_transaction(self, offsets: list[TopicPartition], group_metadata: Any, timeout_s: float = 30.0) -> bool:
        """Commit the open transaction with ``offsets`` and open the next. False: it was aborted (its outputs
        are discarded, its offsets not committed: the requests are read and scored again). A fatal error --
        this producer was fenced by a newer instance -- raises ``OutputError``."""
        try:
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
            self._producer.commit_transaction(timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.txn_requires_abort():
                log.warning("transaction aborted: %s", error)
                self._producer.abort_transaction(timeout_s)
                self._producer.begin_transaction()
                return False
            raise OutputError(f"transaction failed: {exc}") from None
        self._producer.begin_transaction()
        return True

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued output; returns how many are still undelivered."""
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> int:
        remaining = self.flush(timeout_s)
        self._running = False
        self._thread.join(timeout=1.0)
        return remaining


def source_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]


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
                raise OutputError(f"reading back {message.topic()}[{message.partition()}]: {message.error()}")
            source = _source_of(message)
            if source is None or source[0] != source_topic or source[1] != message.partition():
                continue
            key = (message.topic(), message.partition())
            if source[2] > best.get(key, -1):
                best[key] = source[2]
    consumer.unassign()
    return best
