"""Services stop on what no retry can fix, and retry what may pass: against a real redis-server that refuses a
wrong password, the label consumer and the prediction log stop with one CRITICAL line naming the cause and the
fix and report it to the wiring's hook (``Background.set_fatal_hook``) -- before, the label consumer retried an
authentication failure forever. Against a Redis that does not answer (retriable), the label consumer holds its
batch and keeps retrying, and its hook is never called. Kafka is the real embedded broker."""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.adapters import devstack
from streamer.adapters.redis_state import RedisStateStore
from streamer.core.errors import StateStoreError, StreamerError
from streamer.core.state import LoggedBatch
from streamer.services.label_consumer import LabelConsumer
from streamer.services.prediction_log import PredictionLog
from tests.integration.test_redis_tls import system_redis

PASSWORD = "svc-Redis-pw-41c7"  # test secrets: neither may appear in a log line
WRONG = "bad-Redis-pw-0d2e"
BOUND_S = 60.0  # generous: a busy 2-core machine


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """The port of a redis-server that requires ``PASSWORD``."""
    port = devstack.free_port()
    argv = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD)
    with system_redis([*argv, "--requirepass", PASSWORD], tmp_path, client):
        yield port


class Recorder:
    """The metrics observer the services report to."""

    def __init__(self) -> None:
        self.redis_errors: list[str] = []
        self.labels: list[dict[str, int]] = []

    def on_redis_error(self, operation: str) -> None:
        self.redis_errors.append(operation)

    def on_labels(self, counts: dict[str, int]) -> None:
        self.labels.append(counts)

    def on_learned(self, counts: dict) -> None:
        pass

    def on_prediction_log_dropped(self, count: int) -> None:
        pass


def fatal_queue() -> tuple[queue.Queue[tuple[str, StreamerError]], Callable[[str, StreamerError], None]]:
    reports: queue.Queue[tuple[str, StreamerError]] = queue.Queue()
    return reports, lambda name, error: reports.put((name, error))


def label_consumer(
    bootstrap: str, topic_factory: Callable[..., str], url: str, observer: Recorder, group: str
) -> tuple[LabelConsumer, str]:
    feedback, dlq = topic_factory("feedback", 1), topic_factory("dlq", 1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(3):
        producer.produce(feedback, json.dumps({"id": f"r-{i}", "label": 1}).encode(), b"k")
    assert producer.flush(30) == 0
    store = RedisStateStore.from_url(url)
    return LabelConsumer(bootstrap, {}, group, feedback, dlq, store, observer), feedback


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-feedback"})
    try:
        [position] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return position.offset
    finally:
        consumer.close()


def test_the_label_consumer_stops_on_a_wrong_password_with_one_line_and_a_report(
    password_redis: int,
    kafka_broker: devstack.ServerInfo,
    topic_factory: Callable[..., str],
    unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer, group = Recorder(), unique_name("group")
    url = f"redis://:{WRONG}@127.0.0.1:{password_redis}/0"
    consumer, feedback = label_consumer(kafka_broker.address, topic_factory, url, observer, group)
    reports, hook = fatal_queue()
    consumer.set_fatal_hook(hook)
    with caplog.at_level(logging.WARNING):
        consumer.start()
        name, error = reports.get(timeout=BOUND_S)
        consumer.stop(BOUND_S)
    assert name == "labels" and isinstance(error, StateStoreError) and not error.retriable
    assert "redis.url" in str(error) and "password" in str(error)  # the fix, named
    assert isinstance(error.__cause__, redis.exceptions.AuthenticationError)
    assert observer.redis_errors == ["apply_labels"] and not observer.labels  # one attempt, nothing applied
    assert consumer.service.fatal is error and not consumer.service._thread.is_alive()
    critical = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert len(critical) == 1 and "labels" in critical[0] and "redis.url" in critical[0], critical
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert WRONG not in text and PASSWORD not in text
    assert committed(kafka_broker.address, group, feedback) < 0  # the batch stays for the next owner
    assert reports.empty()  # reported once


def test_the_label_consumer_retries_a_redis_that_does_not_answer(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    observer, group = Recorder(), unique_name("group")
    url = f"redis://127.0.0.1:{devstack.free_port()}/0"  # nobody listens: connection refused, retriable
    consumer, feedback = label_consumer(kafka_broker.address, topic_factory, url, observer, group)
    reports, hook = fatal_queue()
    consumer.set_fatal_hook(hook)
    consumer.start()
    try:
        deadline = time.monotonic() + BOUND_S
        while len(observer.redis_errors) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert observer.redis_errors[:3] == ["apply_labels"] * 3  # held and retried, once a second
        assert reports.empty() and consumer.service.fatal is None and consumer.service._thread.is_alive()
    finally:
        consumer.stop(BOUND_S)
    assert committed(kafka_broker.address, group, feedback) < 0


def test_the_prediction_log_stops_on_a_wrong_password_and_keeps_its_rows(password_redis: int) -> None:
    observer = Recorder()
    store = RedisStateStore.from_url(f"redis://:{WRONG}@127.0.0.1:{password_redis}/0")
    log = PredictionLog(store, observer)
    log.submit([LoggedBatch("fraud", "1", 0.5, time.time(), ["r-1", "r-2"], [0.9, 0.1])])
    reports, hook = fatal_queue()
    log.set_fatal_hook(hook)
    log.start()
    name, error = reports.get(timeout=BOUND_S)
    log.stop(BOUND_S)
    assert name == "prediction-log" and not error.retriable and "redis.url" in str(error)
    assert observer.redis_errors[0] == "log_predictions" and log.logged == 0 and log.dropped == 0
    right = RedisStateStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:{password_redis}/0")
    assert right.log_packed([]) == 0 and right.client.ping()  # the server itself was fine all along
