"""The worker as a subprocess, driven only through Kafka topics, as a user drives it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.conftest import REPO

# Online learning, evaluation and drift at test speed: key prefix per test, sub-second refresh and checks.
LEARNING_CONFIG = """
[redis]
key_prefix = "{prefix}"

[online]
refresh_ms = 200

[evaluation]
accuracy_floor = 0.7
min_labels = 100
check_interval_s = 1.0
drift_interval_s = 1.0
drift_min_rows = 300
"""


def models_with_online(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud", models / "fraud")
    shutil.copytree(REPO / "examples" / "models" / "fraud-online", models / "fraud-online")
    return models


@dataclass
class Topics:
    requests: str
    predictions: str
    feedback: str
    dlq: str
    group: str

    def env(self) -> dict[str, str]:
        return {
            "STREAMER_REQUESTS_TOPIC": self.requests,
            "STREAMER_PREDICTIONS_TOPIC": self.predictions,
            "STREAMER_FEEDBACK_TOPIC": self.feedback,
            "STREAMER_DLQ_TOPIC": self.dlq,
            "STREAMER_GROUP_ID": self.group,
        }


@pytest.fixture
def topics(kafka_broker: devstack.ServerInfo, unique_name: Callable[[str], str]) -> Callable[..., Topics]:
    def make(partitions: int = 8, dlq_config: dict[str, str] | None = None) -> Topics:
        """Fresh topics; ``dlq_config`` creates the dead-letter topic with these topic configs."""
        t = Topics(unique_name("req"), unique_name("pred"), unique_name("fb"), unique_name("dlq"), unique_name("grp"))
        if dlq_config:
            admin = AdminClient({"bootstrap.servers": kafka_broker.address})
            admin.create_topics([NewTopic(t.dlq, partitions, 1, config=dlq_config)])[t.dlq].result(10)
        KafkaAdmin(kafka_broker.address).create_topics([t.requests, t.predictions, t.feedback, t.dlq], partitions)
        return t

    return make


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout_s: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(re.findall(r"assigned partitions \[", self.log())) >= count:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker not assigned after {timeout_s} s:\n{self.log()[-5000:]}")

    def metrics(self) -> dict[str, float]:
        """The worker's /metrics, as {sample name with labels: value}."""
        import urllib.request

        match = re.search(r"metrics: (http://\S+/metrics)", self.log())
        assert match, "the worker did not print its metrics address"
        with urllib.request.urlopen(match.group(1), timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def ready(self) -> dict | None:
        """The worker's /ready answer (None while it answers 503 or not at all)."""
        import json
        import urllib.error
        import urllib.request

        match = re.search(r"metrics: http://([\d.]+:\d+)/metrics", self.log())
        if not match:
            return None
        try:
            with urllib.request.urlopen(f"http://{match.group(1)}/ready", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError):
            return None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def wait_exit(self, timeout_s: float) -> int:
        """The exit code, once the worker exits by itself within ``timeout_s``."""
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {timeout_s} s:\n{self.log()[-3000:]}") from None

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


@pytest.fixture(params=["faust", "batch"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every end-to-end test that starts a worker runs once per engine: same contract either way."""
    return request.param


@pytest.fixture
def worker_factory(
    kafka_broker: devstack.ServerInfo, tmp_path: Path, engine: str
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``streamer worker`` subprocesses on given topics; all are killed at the end of the test."""
    started: list[WorkerProcess] = []

    def start(topics: Topics, config: str | None = None, **env: str) -> WorkerProcess:
        index = len(started)
        workdir = tmp_path / f"worker-{index}"
        workdir.mkdir()
        settings = {
            "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
            "STREAMER_MODELS_DIR": str(REPO / "models"),
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_STATE_DIR": str(workdir / "state"),
            "STREAMER_ENGINE": engine,
            **topics.env(),
            **env,
        }
        if config is not None:
            (workdir / "streamer.toml").write_text(config)
        log_path = workdir / "worker.log"
        worker = WorkerProcess(devstack.start_worker(workdir, log_path, settings), log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, list | None]], rate: float = 0
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, "message.max.bytes": 10_000_000}
    )
    started = time.monotonic()
    for index, (key, value, headers) in enumerate(messages):
        if rate:
            ahead = started + index / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_all(
    bootstrap: str, topic_names: list[str], expected: int, timeout_s: float = 90.0, settle_s: float = 1.5
) -> list[Message]:
    """Every message of the topics, as a read_committed consumer sees them; waits for ``expected`` and then
    ``settle_s`` more, so that a duplicate written late is caught too."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 5,
        }
    )
    assignment = []
    for name in topic_names:
        metadata = consumer.list_topics(name, timeout=10).topics[name]
        assignment += [TopicPartition(name, p, OFFSET_BEGINNING) for p in metadata.partitions]
    consumer.assign(assignment)
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=5000, timeout=0.1):
                if message.error() is None:
                    messages.append(message)
            if len(messages) >= expected:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle_s:
                    break
    finally:
        consumer.close()
    return messages


def headers_of(message: Message) -> dict[str, Any]:
    return {k: v for k, v in (message.headers() or [])}
