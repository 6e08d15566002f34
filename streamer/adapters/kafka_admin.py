"""Topics and partitions (confluent-kafka AdminClient): create idempotently, report mismatches, delete, and
read each partition's offsets (``partition_offsets``).

Partition counts matter to streamer: a prediction (or dead letter) is written to the same partition number as
its request, so per-key order holds end to end whatever partitioner the clients use. That needs the output
topics to have as many partitions as the request topic; ``create_topics`` reports any topic whose count differs
(the embedded broker can't add partitions; on Kafka, ``kafka-topics --alter`` can; ``core.topic_partitions``
says what to do).

End offsets are read, not trusted: the embedded broker reports a partition's high watermark as its last
batch's base offset + 1 (measured: 1 for a partition holding 500 records written as one batch), so
``partition_offsets`` reads from the reported watermark minus one to the partition's end, where librdkafka
says it reached the end (``enable.partition.eof``), and keeps the larger of the two. On Apache Kafka the
watermark is already the end and the read returns at once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streamer.adapters import librdkafka_config
from streamer.core.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TopicStatus:
    name: str
    partitions: int
    created: bool
    expected_partitions: int

    @property
    def mismatch(self) -> bool:
        return self.partitions != self.expected_partitions


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition: its first and end offsets, and a group's committed offset (None: it committed none)."""

    partition: int
    first: int
    end: int
    committed: int | None

    @property
    def lag(self) -> int:
        """Records the group has yet to read (all of them when it committed nothing: workers start earliest)."""
        return max(self.end - (self.committed if self.committed is not None else self.first), 0)


_librdkafka = logging.getLogger("streamer.librdkafka")
_RETRY_NOISE = re.compile(
    r"^\[thrd:[^\]]*\]: |\s*\(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)$"
)


class LibrdkafkaLog:
    """librdkafka's log lines, through Python logging (the ``logger`` of every client).

    Why not straight through: a connection failure (an untrusted CA, refused SASL credentials, a broker that is
    down) is logged as ``FAIL`` at every retry, tens of lines a second, on stderr, while the command itself ends
    with its own error. Those lines go to DEBUG, and the last one is kept so that the one line a command fails
    with can name the cause (``SSL handshake failed: certificate verify failed``). Everything else keeps its
    level. librdkafka never prints ``sasl.password``; the cause is its own text, not the settings.
    """

    def __init__(self) -> None:
        self.last_failure: str | None = None

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if len(args) == 3 and args[0] == "FAIL":
            self.last_failure = _RETRY_NOISE.sub("", str(args[2]))
            _librdkafka.debug(fmt, *args)
            return
        _librdkafka.log(level, fmt, *args)

    def cause(self) -> str:
        """`` (the last connection failure)``, or nothing: to append to an error message."""
        return f" ({self.last_failure})" if self.last_failure else ""


LIBRDKAFKA_LOG = LibrdkafkaLog()


def client_config(bootstrap: str, client: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The base config of every confluent-kafka client: bootstrap, then the user's passthrough, then ours."""
    return {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG, **client, **overrides}


def new_client(factory: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """``factory(config)`` (a confluent-kafka client), or the one line saying what librdkafka refused when it
    created it (``ConfigError``: a TLS file missing on this machine, a SASL mechanism this build lacks). The
    settings loader checked every property already; these checks need the client."""
    try:
        return factory(config)
    except KafkaException as exc:
        client = {k: v for k, v in config.items() if k not in ("bootstrap.servers", "logger")}
        raise ConfigError(librdkafka_config.refusal(client, exc)) from None


# How often a warming producer reports its state (``warmed_producer``): the granularity of the wait.
_WARM_STATS_MS = 50


def warmed_producer(config: dict[str, Any], timeout_s: float = 10.0) -> tuple[Producer, Any]:
    """A producer that is ready to send at once, and the cluster's metadata (every topic; none auto-created).

    Why: a new producer connects, reads metadata and -- idempotent, as every streamer producer is -- asks the
    broker for a producer id before its first message leaves (measured on the embedded broker: ~500 ms, during
    which the first messages wait). A caller that times its messages (``streamer produce``'s rate and
    timestamps, the client's first call) warms it first: one metadata request for all topics (it connects),
    then polls until librdkafka's statistics say the producer id is assigned (``eos.idemp_state``), at most
    ``timeout_s``. ``BrokerError`` when the cluster does not answer."""
    state: dict[str, str] = {}

    def statistics(text: str) -> None:
        if state.get("idempotence") != "Assigned":
            state["idempotence"] = json.loads(text).get("eos", {}).get("idemp_state", "")

    idempotent = str(config.get("enable.idempotence", "")).lower() == "true"
    producer = new_client(Producer, {**config, "statistics.interval.ms": _WARM_STATS_MS, "stats_cb": statistics})
    try:
        metadata = producer.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        producer.poll(0)  # delivers the queued log lines: the cause of a connection failure
        raise BrokerError(f"cannot read cluster metadata: {exc}{LIBRDKAFKA_LOG.cause()}") from None
    deadline = time.monotonic() + timeout_s
    while idempotent and state.get("idempotence") != "Assigned" and time.monotonic() < deadline:
        producer.poll(_WARM_STATS_MS / 1000)
    return producer, metadata


class KafkaAdmin:
    def __init__(
        self, bootstrap: str, client: dict[str, Any] | None = None, timeout_s: float = 10.0, **overrides: Any
    ) -> None:
        self._admin = new_client(AdminClient, client_config(bootstrap, client or {}, **overrides))
        self._timeout_s = timeout_s

    def partition_counts(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """Partition count of each existing topic (of ``topics`` if given)."""
        try:
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            self._admin.poll(0)  # delivers the queued log lines: the cause of a connection failure
            raise BrokerError(f"cannot read cluster metadata: {exc}{LIBRDKAFKA_LOG.cause()}") from None
        wanted = set(topics) if topics is not None else None
        return {
            name: len(topic.partitions)
            for name, topic in metadata.topics.items()
            if topic.error is None and (wanted is None or name in wanted)
        }

    def max_message_bytes(self, topics: Iterable[str]) -> dict[str, int | None]:
        """Each topic's ``max.message.bytes`` as the broker reports it (None: not reported).

        Apache Kafka reports the effective value (the topic's own, else the broker's ``message.max.bytes``);
        the embedded broker reports only what a topic was created with, and enforces none (measured).
        """
        resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
        found: dict[str, int | None] = {}
        try:
            futures = self._admin.describe_configs(resources, request_timeout=self._timeout_s)
            for resource, future in futures.items():
                entry = future.result(timeout=self._timeout_s).get("max.message.bytes")
                found[resource.name] = int(entry.value) if entry is not None and entry.value else None
        except (KafkaException, ValueError, TimeoutError) as exc:
            log.warning("cannot read the topics' max.message.bytes (%s); assuming none", exc)
        return {topic.name: found.get(topic.name) for topic in resources}

    def delete_topics(self, names: Iterable[str]) -> None:
        """Delete ``names`` (every one must exist: the caller checked); their records are gone."""
        futures = self._admin.delete_topics(list(names), request_timeout=self._timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=self._timeout_s)
                log.info("deleted topic %s", name)
            except KafkaException as exc:
                raise BrokerError(f"cannot delete topic {name}: {exc}") from None

    def create_topics(self, names: Iterable[str], partitions: int, replication_factor: int = 1) -> list[TopicStatus]:
        """Create the missing topics; report every topic with its actual partition count."""
        names = list(dict.fromkeys(names))
        existing = self.partition_counts(names)
        missing = [n for n in names if n not in existing]
        created: set[str] = set()
        if missing:
            futures = self._admin.create_topics(
                [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing],
                request_timeout=self._timeout_s,
            )
            for name, future in futures.items():
                try:
                    future.result(timeout=self._timeout_s)
                    created.add(name)
                    log.info("created topic %s with %s partitions", name, partitions)
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue  # another process created it in between: fine, it is idempotent
                    retriable = isinstance(error, KafkaError) and error.retriable()
                    raise BrokerError(f"cannot create topic {name}: {exc}", retriable=retriable) from None
        counts = self._wait_for_topics(names)
        return [TopicStatus(n, counts[n], n in created, partitions) for n in names]

    def _wait_for_topics(self, names: list[str]) -> dict[str, int]:
        deadline = time.monotonic() + self._timeout_s
        while True:
            counts = self.partition_counts(names)
            if all(n in counts for n in names) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        absent = [n for n in names if n not in counts]
        if absent:
            raise BrokerError(f"topic(s) {', '.join(absent)} did not appear in metadata")
        return counts


def partition_offsets(
    bootstrap: str, client: dict[str, Any], topic: str, group: str | None, timeout_s: float = 10.0
) -> list[PartitionOffsets]:
    """First, end and ``group``'s committed offset of every partition of ``topic`` (module docstring: why the end
    is read). Joins no group and commits nothing; ``BrokerError`` when the cluster does not answer."""
    consumer = new_client(
        Consumer,
        client_config(
            bootstrap,
            client,
            **{
                "group.id": group or "streamer-describe",  # committed() reads this group's offsets, never joins
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",  # the log's end, open transactions included
            },
        ),
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise BrokerError(f"topic {topic} does not exist")
        partitions = sorted(found.partitions)
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s) for p in partitions}
        committed: dict[int, int | None] = dict.fromkeys(partitions)
        if group is not None:
            for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s):
                committed[tp.partition] = tp.offset if tp.offset >= 0 else None
        ends = _read_ends(consumer, topic, marks, timeout_s)
    except KafkaException as exc:
        consumer.poll(0)  # delivers the queued log lines: the cause of a connection failure
        raise BrokerError(f"cannot read the offsets of {topic}: {exc}{LIBRDKAFKA_LOG.cause()}") from None
    finally:
        consumer.close()
    return [PartitionOffsets(p, marks[p][0], ends[p], committed[p]) for p in partitions]


def _read_ends(consumer: Any, topic: str, marks: dict[int, tuple[int, int]], timeout_s: float) -> dict[int, int]:
    """Each partition's end: read from its reported high watermark minus one up to where librdkafka reports the
    end; the reported watermark where nothing is read within ``timeout_s``."""
    ends = {p: high for p, (_, high) in marks.items()}
    pending = {p for p, (low, high) in marks.items() if high > low}
    if not pending:
        return ends
    consumer.assign([TopicPartition(topic, p, max(marks[p][1] - 1, marks[p][0])) for p in sorted(pending)])
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=1000, timeout=0.2):
            partition, error = message.partition(), message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                ends[partition] = max(ends[partition], message.offset())
                pending.discard(partition)
            elif error is None:
                ends[partition] = max(ends[partition], message.offset() + 1)
    return ends
