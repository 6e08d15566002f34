"""The user-side clients of ``streamer produce`` and ``streamer consume`` (confluent-kafka).

``produce`` sends messages (synthetic ones from ``streamer.synthetic``, or a JSONL file), keyed, at a given
rate; ``consume`` prints what a ``read_committed`` consumer sees, from the beginning of the topic, without
committing (a throwaway group), so it never disturbs the workers.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from streamer.adapters.kafka_admin import LIBRDKAFKA_LOG, client_config
from streamer.core.errors import StreamerError
from streamer.core.types import OutgoingMessage


@dataclass(frozen=True, slots=True)
class SendReport:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def read_jsonl(path: Path, limit: int = 0) -> Iterator[OutgoingMessage]:
    """Lines of a JSONL file: a request value, or ``{"key": ..., "value": {...}}`` to set the key."""
    with open(path, encoding="utf-8") as file:
        sent = 0
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
            except ValueError as exc:
                raise StreamerError(f"{path}:{number}: not JSON ({exc})") from None
            if isinstance(document, dict) and set(document) == {"key", "value"}:
                key = document["key"]
                yield OutgoingMessage(
                    None if key is None else str(key).encode(), json.dumps(document["value"]).encode()
                )
            else:
                yield OutgoingMessage(None, line.strip().encode())
            sent += 1
            if limit and sent >= limit:
                return


def produce_requests(
    bootstrap: str,
    client: dict[str, Any],
    topic: str,
    messages: Iterable[OutgoingMessage],
    *,
    rate: float = 0.0,
    progress: bool = False,
    linger_ms: int = 5,
) -> SendReport:
    producer = Producer(client_config(bootstrap, client, **{"linger.ms": linger_ms, "enable.idempotence": True}))
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.monotonic()
    count = 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"producing to {topic}", total=None)
    try:
        for message in messages:
            if rate > 0:
                ahead = started + count / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(topic, message.value, message.key, headers=message.headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
            count += 1
            if bar is not None and count % 500 == 0:
                bar.update(task, completed=count)
        remaining = producer.flush(30)
    finally:
        if bar is not None:
            bar.stop()
    if failures or remaining:
        why = "; ".join(failures[:3]) or f"still queued after 30 s{LIBRDKAFKA_LOG.cause()}"
        raise StreamerError(f"{len(failures) + remaining} of {count} messages not delivered: {why}")
    return SendReport(count, time.monotonic() - started)


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def consume_lines(
    bootstrap: str, client: dict[str, Any], topic: str, count: int = 0, idle_timeout_s: float = 5.0, meta: bool = False
) -> Iterator[str]:
    consumer = Consumer(
        client_config(
            bootstrap,
            client,
            **{
                "group.id": f"streamer-consume-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            },
        )
    )
    # Assign every partition instead of joining a group: no rebalance wait, and nothing committed.
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:  # unreachable, untrusted or refused: one line naming the cause, no traceback
        consumer.poll(0)  # delivers the queued log lines: the cause of a connection failure
        consumer.close()
        raise StreamerError(f"cannot read cluster metadata: {exc}{LIBRDKAFKA_LOG.cause()}") from None
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        consumer.close()
        raise StreamerError(f"topic {topic} does not exist")
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = 0
    last = time.monotonic()
    try:
        while (not count or seen < count) and time.monotonic() - last < idle_timeout_s:
            for message in consumer.consume(num_messages=500, timeout=0.1):
                if message.error():
                    continue
                last = time.monotonic()
                seen += 1
                if meta:
                    yield json.dumps(
                        {
                            "key": _text(message.key()),
                            "partition": message.partition(),
                            "offset": message.offset(),
                            "headers": {k: _text(v) for k, v in (message.headers() or [])},
                            "value": _text(message.value()),
                        }
                    )
                else:
                    yield _text(message.value()) or ""
                if count and seen >= count:
                    return
    finally:
        consumer.close()
