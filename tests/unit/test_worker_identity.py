"""One id per worker (``worker.name``, else ``<host>:<pid>``) in its model events and ``/ready``; and the
model-events fields of a change of the serving state, written once for commands and rollouts."""

from __future__ import annotations

import json

import pytest

from streamer.config import WorkerSettings
from streamer.core import rollout
from streamer.core.rollout import ControlState
from streamer.engines.common import Readiness
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


def test_the_default_id_is_host_and_pid_so_two_workers_on_one_host_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "node-1")
    monkeypatch.setattr("os.getpid", lambda: 4100)
    first = WorkerSettings().worker_id()
    monkeypatch.setattr("os.getpid", lambda: 4101)
    assert (first, WorkerSettings().worker_id()) == ("node-1:4100", "node-1:4101")
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
    readiness = Readiness(assigned=True, partitions=lambda: [0, 3], worker="scorer-7")
    assert readiness.answer() == (200, {"status": "ready", "worker": "scorer-7", "partitions": [0, 3]})
    readiness.fatal = "lost"
    assert readiness.answer() == (503, {"status": "failed", "worker": "scorer-7"})


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
