"""One id per worker (``worker.name``, else ``<host>:<pid>``) in its model events and ``/ready``; and the
model-events fields of a change of the serving state, written once for commands and rollouts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from streamer.app import Health
from streamer.config import WorkerSettings
from streamer.core import rollout
from streamer.core.rollout import ControlState
from streamer.services.quality_monitor import ModelEvents


class Produced:
    """Records what a producer was asked to write (``produce``/``poll`` of confluent-kafka's Producer)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.records.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        return 0


class Counted:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def on_model_event(self, kind: str) -> None:
        self.kinds.append(kind)


def test_the_default_id_is_host_and_pid_so_two_workers_on_one_host_differ() -> None:
    assert WorkerSettings().worker_id() == f"{socket.gethostname()}:{os.getpid()}"
    code = "from streamer.config import WorkerSettings; print(WorkerSettings().worker_id())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other.startswith(f"{socket.gethostname()}:") and other != WorkerSettings().worker_id()
    assert WorkerSettings(name="scorer-7").worker_id() == "scorer-7"


def test_model_events_and_ready_carry_the_worker_id() -> None:
    producer, observer = Produced(), Counted()
    events = ModelEvents(producer, "model-events", None, observer, "scorer-7")
    assert events.emit("model-loaded", "fraud", "2", path="/m/fraud/2")
    topic, value, key = producer.records[0]
    event = json.loads(value)
    assert (topic, key, event["worker"], event["type"], observer.kinds) == (
        "model-events",
        b"fraud",
        "scorer-7",
        "model-loaded",
        ["model-loaded"],
    )
    health = Health(assigned=True, partitions=lambda: [0, 3], worker="scorer-7")
    assert health.readiness() == {"status": "ready", "worker": "scorer-7", "partitions": [0, 3]}
    health.fatal = "lost"
    assert health.readiness() is None


def test_a_change_names_the_champion_after_it_and_the_one_before() -> None:
    state = rollout.pinned(ControlState(), 1, "pinned 1")
    promoted = rollout.promote(state, 3, 1, "3 beat 1")
    assert rollout.change_fields(promoted, 1) == {
        "generation": 2,
        "champion_before": 1,
        "champion": 3,
        "reason": "3 beat 1",
    }
    rolled_back = rollout.rollback(rollout.trial(state, 1, 2, "shadow", 0.0, "try 2"), 1, "2 was worse")
    assert (rollout.change_fields(rolled_back, 1)["champion"], rolled_back.rolled_back) == (1, (2,))
