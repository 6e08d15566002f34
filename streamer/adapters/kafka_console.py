"""The user-side clients of ``streamer produce``, ``streamer label`` and ``streamer consume`` (confluent-kafka).

``produce`` sends messages (synthetic ones from ``streamer.synthetic``, a JSONL file, or labels), keyed, at a
given rate, to a topic that must exist: the producer reads the metadata of every topic (which creates none)
and refuses a missing one -- a producer that asked for it by name would have the broker create it with the
broker's default partition count, which the worker then refuses. The producer is warmed before the clock
starts (``kafka_admin.warmed_producer``), so the first messages' timestamps, and so the predictions'
``latency_ms``, do not include the producer's own start. ``consume`` prints what a ``read_committed``
consumer sees, from the beginning of the topic (or an offset, or its end), without committing (no group is
joined), so it never disturbs the workers.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streamer.adapters.kafka_admin import (
    LIBRDKAFKA_LOG,
    client_config,
    new_client,
    partition_offsets,
    warmed_producer,
)
from streamer.core.errors import ConfigError, StreamerError
from streamer.core.names import unknown
from streamer.core.types import OutgoingMessage


@dataclass(frozen=True, slots=True)
class SendReport:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def read_jsonl(path: Path, limit: int = 0) -> Iterator[OutgoingMessage]:
    """Lines of a JSONL file: a request value, or ``{"key": ..., "value": {...}}`` to set the key. The file is
    opened now: one that cannot be is refused before anything connects (``open_jsonl``)."""
    return _messages(open_jsonl(path), path, limit)


def _messages(file: IO[str], path: Path, limit: int) -> Iterator[OutgoingMessage]:
    with file:
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


def open_jsonl(path: Path) -> IO[str]:
    """``path`` opened for reading, or the one line that says why not (``ConfigError``)."""
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror} (check the path)") from None


def produce_requests(
    bootstrap: str,
    client: dict[str, Any],
    topic: str,
    messages: Iterable[OutgoingMessage],
    *,
    rate: float = 0.0,
    progress: bool = False,
    linger_ms: int = 5,
    create: str | None = None,
) -> SendReport:
    """Send ``messages`` to ``topic`` (which must exist: ``create`` is the command a refusal names, default
    ``streamer topics create TOPIC``), at most ``rate`` a second, timed from when the producer is ready."""
    producer, metadata = warmed_producer(
        client_config(bootstrap, client, **{"linger.ms": linger_ms, "enable.idempotence": True})
    )
    if topic not in metadata.topics:
        names = [name for name in metadata.topics if not name.startswith("__")]
        command = create or f"streamer topics create {topic}"
        raise unknown("topic", topic, names, then=f"create it with `{command}`", listed=False)
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.monotonic()
    count = 0
    bar = None
    if progress:  # on stderr, and only on a terminal: stdout stays the command's output, empty for produce
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        if console.is_terminal:
            bar = Progress(transient=True, console=console)
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
    bootstrap: str,
    client: dict[str, Any],
    topic: str,
    count: int = 0,
    idle_timeout_s: float = 5.0,
    meta: bool = False,
    partitions: list[int] | None = None,
    offset: int | None = None,
    from_end: bool = False,
) -> Iterator[str]:
    """The records of ``topic`` as JSON lines: ``partitions`` (default all), each from ``offset`` (default its
    first record) or, ``from_end``, from its end (only what is written from now on); at most ``count``, until
    nothing arrived for ``idle_timeout_s``."""
    consumer = new_client(
        Consumer,
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
        ),
    )
    # Assign every partition instead of joining a group: no rebalance wait, and nothing committed.
    try:
        metadata = consumer.list_topics(timeout=10)  # every topic: asking for one by name could create it
    except KafkaException as exc:  # unreachable, untrusted or refused: one line naming the cause, no traceback
        consumer.poll(0)  # delivers the queued log lines: the cause of a connection failure
        consumer.close()
        raise StreamerError(f"cannot read cluster metadata: {exc}{LIBRDKAFKA_LOG.cause()}") from None
    try:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            names = [name for name in metadata.topics if not name.startswith("__")]
            raise unknown("topic", topic, names, then="`streamer topics list` shows the topics", listed=False)
        available = sorted(found.partitions)
        chosen = sorted(set(partitions)) if partitions else available
        missing = [p for p in chosen if p not in available]
        if missing:
            raise ConfigError(
                f"consume: topic {topic} has no partition {missing[0]} (it has {len(available)}: "
                f"0-{len(available) - 1})"
            )
        if from_end:  # the broker's reported end is not trusted (kafka_admin.partition_offsets)
            ends = {row.partition: row.end for row in partition_offsets(bootstrap, client, topic, None)}
            starts = {p: ends[p] for p in chosen}
        else:
            starts = {p: OFFSET_BEGINNING if offset is None else offset for p in chosen}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in chosen])
    except BaseException:
        consumer.close()
        raise
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
