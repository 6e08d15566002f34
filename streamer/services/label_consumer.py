"""The label consumer (contract section 4): delayed labels joined to their predictions, once each.

``LabelConsumer`` consumes the feedback topic (group ``<group>-feedback``) in batches: decodes each label,
applies the batch with one Lua call (``RedisStateStore.apply_labels``: once per label id, however often it is
read), sends undecodable feedback to the dead-letter topic with the contract's headers, and commits the
offsets only after the batch was applied -- a crash re-reads from the last commit, and the markers make the
replay harmless.

Each label goes to Redis with its record's position (``topic:partition:offset``), which its once-only marker
keeps: a label whose id was applied before counts as ``reread`` when it is the same record read again (this
worker or another re-reading an uncommitted batch: after a crash, or after a long Redis outage in which the held
batch outlived ``max.poll.interval.ms``, the group took the partitions back and the commit failed) and as
``duplicate`` only when another record carried the same id -- the label was really sent twice. Outcomes, one per
feedback record, in ``streamer_labels_total{outcome}``: ``joined``, ``unknown``, ``duplicate``, ``reread``,
``dead_letter``.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streamer.adapters.kafka_admin import client_config
from streamer.core.errors import DecodeError, StateStoreError
from streamer.core.headers import dead_letter_headers
from streamer.core.labels import decode_label
from streamer.core.state import DUPLICATE, JOINED, LEARNED, REREAD, UNKNOWN, StateStore
from streamer.core.types import SourceRef
from streamer.services.prediction_log import PredictionLog
from streamer.services.runner import Background, Service

log = logging.getLogger(__name__)

# The outcome of a label per code of ``apply_labels`` below ``LEARNED`` (a learnt label is also ``joined``).
OUTCOMES = {JOINED: "joined", UNKNOWN: "unknown", DUPLICATE: "duplicate", REREAD: "reread"}


def feedback_group(group_id: str) -> str:
    """The consumer group of the workers' label consumers (``streamer topics describe`` shows its lag)."""
    return f"{group_id}-feedback"


class LabelConsumer(Background):
    def __init__(
        self,
        bootstrap: str,
        client: dict[str, Any],
        group_id: str,
        feedback_topic: str,
        dlq_topic: str,
        store: StateStore,
        observer: Any,
        prediction_log: PredictionLog | None = None,
        *,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self._topic, self._dlq, self._store, self._observer = feedback_topic, dlq_topic, store, observer
        self._prediction_log = prediction_log
        self._consumer_config = client_config(
            bootstrap,
            client,
            **{
                "group.id": feedback_group(group_id),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": heartbeat_interval_ms,
                "max.poll.interval.ms": max(session_timeout_ms, 10_000),
                "fetch.wait.max.ms": 50,
            },
        )
        self._producer = Producer(client_config(bootstrap, client, **{"enable.idempotence": True, "linger.ms": 5}))
        self._consumer: Consumer | None = None
        self.service = Service("labels", self._step, on_stop=self._close)

    def start(self) -> None:
        self._consumer = Consumer(self._consumer_config)
        self._consumer.subscribe([self._topic])
        self.service.start()

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._producer.flush(10)

    def _step(self) -> bool:
        assert self._consumer is not None
        messages = [m for m in self._consumer.consume(num_messages=2000, timeout=0.1) if not m.error()]
        if not messages:
            return True  # consume() itself waited
        if not self._apply(messages):
            return False  # stopping with the batch unapplied: not committed, re-read by the next owner
        offsets: dict[int, int] = {}
        for message in messages:
            offsets[message.partition()] = max(offsets.get(message.partition(), -1), message.offset())
        try:
            self._consumer.commit(offsets=[TopicPartition(self._topic, p, o + 1) for p, o in offsets.items()])
        except KafkaException as exc:  # the group moved on (e.g. the batch was held through a Redis outage)
            log.warning(
                "labels applied but their offsets not committed (%s): the next owner re-reads them (counted as reread)",
                exc,
            )
        return True

    def _apply(self, messages: list[Any]) -> bool:
        """Apply one batch of labels; False if stopped before Redis took it."""
        labels: list[tuple[str, float, str]] = []
        counts = dict.fromkeys([*OUTCOMES.values(), "dead_letter"], 0)
        for message in messages:
            try:
                label = decode_label(message.value())
            except DecodeError as exc:
                source = SourceRef(self._topic, message.partition(), message.offset())
                headers = dead_letter_headers(exc, source, message.headers())
                self._producer.produce(
                    self._dlq, message.value(), message.key(), partition=message.partition(), headers=headers
                )
                counts["dead_letter"] += 1
                continue
            labels.append((label.id, label.label, f"{self._topic}:{message.partition()}:{message.offset()}"))
        while True:
            # Before every attempt, not only the first: after an outage longer than this wait, the attempt that
            # succeeds is a retry, and the log's backlog (the predictions of these labels) flushes at the same
            # moment -- applied first, those labels would count as unknown. Bounded: a stuck log delays, never
            # stops, the labels.
            if self._prediction_log is not None:
                self._prediction_log.wait_logged(timeout_s=10.0)
            try:
                codes = self._store.apply_labels(labels, time.time())
                break
            except StateStoreError as exc:  # Redis down: hold the batch (offsets stay uncommitted) and retry
                self._observer.on_redis_error("apply_labels")
                if not exc.retriable:  # refused (credentials, ACL, ...): retrying cannot help; the batch stays
                    raise  # uncommitted for the next owner, and the service stops and reports it (runner.py)
                log.warning("cannot apply %s labels (%s); retrying", len(labels), exc)
                if self.service.wait(1.0):
                    return False
        learned: collections.Counter[tuple[str, str]] = collections.Counter()
        for code in codes:
            if code >= LEARNED:
                counts["joined"] += 1
                learned[self._store.learner_of(code)] += 1
            else:
                counts[OUTCOMES[code]] += 1
        self._producer.flush(10)
        self._observer.on_labels(counts)
        self._observer.on_learned(dict(learned))
        return True
