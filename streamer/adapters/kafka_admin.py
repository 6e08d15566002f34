"""Topics and partitions (confluent-kafka AdminClient): create idempotently, report mismatches.

Partition counts matter to streamer: a prediction (or dead letter) is written to the same partition number as
its request, so per-key order holds end to end whatever partitioner the clients use. That needs the output
topics to have as many partitions as the request topic; ``create_topics`` reports any topic whose count differs
(the embedded broker can't add partitions; on Kafka, ``kafka-topics --alter`` can).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streamer.core.errors import BrokerError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicStatus:
    name: str
    partitions: int
    created: bool
    expected_partitions: int

    @property
    def mismatch(self) -> bool:
        return self.partitions != self.expected_partitions


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


class KafkaAdmin:
    def __init__(
        self, bootstrap: str, client: dict[str, Any] | None = None, timeout_s: float = 10.0, **overrides: Any
    ) -> None:
        self._admin = AdminClient(client_config(bootstrap, client or {}, **overrides))
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
