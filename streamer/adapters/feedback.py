"""The feedback side (contract section 4): prediction logging off the hot path, and the label consumer.

``PredictionLogger`` takes the predictions the pipeline emits and writes them to Redis from a thread of its
own, in batches, so that Redis latency never reaches the scoring path. Its queue is bounded: when Redis is
down for long, the oldest entries are dropped and counted (``dropped``), never silently lost and never
growing memory without bound. OIP predictions (several rows) are not logged: a label joins one row.

``FeedbackLoop`` consumes the feedback topic (group ``<group>-feedback``) in batches: decodes each label,
applies the batch with one Lua call (``RedisStateStore.apply_labels``: once per label id, however often it is
read), sends undecodable feedback to the dead-letter topic with the contract's headers, and commits the
offsets only after the batch was applied -- a crash re-reads from the last commit, and the markers make the
replay harmless.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.adapters.kafka_admin import client_config
from streamer.adapters.metrics import WorkerMetrics
from streamer.adapters.redis_state import DUPLICATE, JOINED, LEARNED, UNKNOWN, LoggedPrediction, RedisStateStore
from streamer.core.envelope import dead_letter_headers, decode_label
from streamer.core.errors import DecodeError
from streamer.core.types import SourceRef

log = logging.getLogger(__name__)


class PredictionLogger:
    def __init__(
        self,
        store: RedisStateStore,
        metrics: WorkerMetrics,
        max_queued: int = 200_000,
        flush_every_s: float = 0.1,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._queue: collections.deque[LoggedPrediction] = collections.deque()
        self._max_queued = max_queued
        self._flush_every_s = flush_every_s
        self._running = True
        self._lock = threading.Lock()
        self.dropped = 0
        self.errors = 0
        self.logged = 0
        self.submitted = 0  # every prediction ever handed over; ``logged + dropped`` catches up with it
        self._thread = threading.Thread(target=self._run, name="streamer-prediction-log", daemon=True)
        self._thread.start()

    def submit(self, predictions: list[LoggedPrediction]) -> None:
        with self._lock:
            self._queue.extend(predictions)
            self.submitted += len(predictions)
            overflow = len(self._queue) - self._max_queued
            for _ in range(max(overflow, 0)):
                self._queue.popleft()
            if overflow > 0:
                self.dropped += overflow
                self._metrics.prediction_log_dropped.inc(overflow)

    def _run(self) -> None:
        while self._running or self._queue:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 5000))]
            if not batch:
                time.sleep(self._flush_every_s)
                continue
            try:
                self.logged += self._store.log_predictions(batch)
            except Exception as exc:  # Redis down: keep the batch (bounded by max_queued) and retry later
                self.errors += 1
                self._metrics.redis_errors.labels("log_predictions").inc()
                log.warning("cannot log %s predictions to Redis (%s); retrying", len(batch), exc)
                with self._lock:
                    self._queue.extendleft(reversed(batch))
                time.sleep(1.0)
                if not self._running:
                    return

    def stop(self, timeout_s: float = 5.0) -> None:
        self._running = False
        self._thread.join(timeout_s)

    def wait_logged(self, timeout_s: float) -> bool:
        """Wait until every prediction submitted so far is logged (or dropped); False on timeout.

        The feedback loop calls it before applying labels: after a Redis outage both the logger's backlog
        and the held labels flush at once, and a label applied before its prediction is logged would count
        as unknown. Bounded, so a stuck logger never stops the labels for long.
        """
        target = self.submitted
        deadline = time.monotonic() + timeout_s
        while self.logged + self.dropped < target:
            if time.monotonic() >= deadline or not self._running:
                return False
            time.sleep(0.02)
        return True


class FeedbackLoop:
    def __init__(
        self,
        bootstrap: str,
        client: dict[str, Any],
        group_id: str,
        feedback_topic: str,
        dlq_topic: str,
        store: RedisStateStore,
        metrics: WorkerMetrics,
        logger: PredictionLogger | None = None,
        *,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self._topic, self._dlq, self._store, self._metrics = feedback_topic, dlq_topic, store, metrics
        self._logger = logger
        self._consumer_config = client_config(
            bootstrap,
            client,
            **{
                "group.id": f"{group_id}-feedback",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": heartbeat_interval_ms,
                "max.poll.interval.ms": max(session_timeout_ms, 10_000),
                "fetch.wait.max.ms": 50,
            },
        )
        self._producer = Producer(client_config(bootstrap, client, **{"enable.idempotence": True, "linger.ms": 5}))
        self._running = True
        self._thread = threading.Thread(target=self._run, name="streamer-feedback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._running = False
        self._thread.join(timeout_s)

    def _run(self) -> None:
        consumer = Consumer(self._consumer_config)
        consumer.subscribe([self._topic])
        try:
            while self._running:
                messages = [m for m in consumer.consume(num_messages=2000, timeout=0.1) if not m.error()]
                if messages:
                    self._apply(messages)
                    offsets: dict[int, int] = {}
                    for message in messages:
                        offsets[message.partition()] = max(offsets.get(message.partition(), -1), message.offset())
                    consumer.commit(offsets=[TopicPartition(self._topic, p, o + 1) for p, o in offsets.items()])
        finally:
            consumer.close()
            self._producer.flush(10)

    def _apply(self, messages: list[Any]) -> None:
        labels: list[tuple[str, float]] = []
        counts = {"joined": 0, "unknown": 0, "duplicate": 0, "dead_letter": 0}
        for message in messages:
            try:
                label = decode_label(message.value())
            except DecodeError as exc:
                source = SourceRef(self._topic, message.partition(), message.offset())
                headers = list(message.headers() or []) + dead_letter_headers(exc, source)
                self._producer.produce(
                    self._dlq, message.value(), message.key(), partition=message.partition(), headers=headers
                )
                counts["dead_letter"] += 1
                continue
            labels.append((label.id, label.label))
        if self._logger is not None:
            self._logger.wait_logged(timeout_s=10.0)
        while True:
            try:
                codes = self._store.apply_labels(labels, time.time())
                break
            except Exception as exc:  # Redis down: hold the batch (offsets stay uncommitted) and retry
                self._metrics.redis_errors.labels("apply_labels").inc()
                log.warning("cannot apply %s labels (%s); retrying", len(labels), exc)
                time.sleep(1.0)
                if not self._running:
                    return
        names = {JOINED: "joined", UNKNOWN: "unknown", DUPLICATE: "duplicate"}
        learned: collections.Counter[tuple[str, str]] = collections.Counter()
        for code in codes:
            if code >= LEARNED:
                counts["joined"] += 1
                learned[self._store.learner_of(code)] += 1
            else:
                counts[names[code]] += 1
        self._producer.flush(10)
        self._metrics.on_labels(counts)
        for (model, version), count in learned.items():
            self._metrics.online_updates.labels(model, version).inc(count)
