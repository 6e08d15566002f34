"""The prediction log's service against the in-memory state store (``tests/memory_state_store.py``): what it
queues reaches the store, a store error (``StateStoreError``) puts the rows back, and a bug is not taken for one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from streamer.core.errors import StateStoreError
from streamer.core.state import JOINED, LoggedBatch
from streamer.services.prediction_log import PredictionLog
from tests.memory_state_store import MemoryStateStore


class Observer:
    def __init__(self) -> None:
        self.redis_errors: list[str] = []

    def on_redis_error(self, operation: str) -> None:
        self.redis_errors.append(operation)

    def on_prediction_log_dropped(self, rows: int) -> None:
        pass


class Failing(MemoryStateStore):
    """Fails ``log_packed`` with ``error`` while it is set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.error: Exception | None = None

    def log_packed(self, blobs: Sequence[bytes]) -> int:
        if self.error is not None:
            raise self.error
        return super().log_packed(blobs)


def batch(ids: list[str]) -> LoggedBatch:
    return LoggedBatch("fraud", "1", 0.5, 1000.0, ids, [0.9] * len(ids))


def make(store: MemoryStateStore) -> tuple[PredictionLog, Observer]:
    observer = Observer()
    log = PredictionLog(store, observer)
    log.service.stop()  # never started: its waits return at once
    return log, observer


def test_queued_predictions_reach_the_store_and_join_labels() -> None:
    store = MemoryStateStore()
    log, _ = make(store)
    log.submit([batch(["a", "b"]), batch(["c"])])
    assert log._step() is True and log.logged == 3
    assert store.apply_labels([("a", 1), ("c", 0)], 1010.0) == [JOINED, JOINED]


def test_a_store_error_puts_the_rows_back_and_they_are_logged_when_it_answers() -> None:
    store = Failing()
    log, observer = make(store)
    log.submit([batch(["a", "b"])])
    store.error = StateStoreError("redis log_predictions: Connection refused")
    assert log._step() is False and log.logged == 0 and observer.redis_errors == ["log_predictions"]
    store.error = None
    assert log._step() is True and log.logged == 2
    assert store.apply_labels([("b", 1)], 1010.0) == [JOINED]


def test_a_bug_is_not_taken_for_a_store_outage() -> None:
    store = Failing()
    log, observer = make(store)
    log.submit([batch(["a"])])
    store.error = KeyError("a bug")
    with pytest.raises(KeyError):  # to the service runner, which logs it with its traceback
        log._step()
    assert observer.redis_errors == []
