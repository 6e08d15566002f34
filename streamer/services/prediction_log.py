"""The prediction log: every released single-row prediction, written to Redis off the hot path so that a
label arriving later can join it (contract section 4).

``PredictionLog`` is a pipeline observer: on each release it takes the batch's columns (ids, scores, and the
features of an online model) per model version -- no object per prediction -- packs them into one MessagePack
blob (a C-level encode, done here on the data path's thread: done on the service thread, big encodes held the
GIL against the data path, measured) and queues it. Its service thread writes what is queued with one script
call per round (``RedisStateStore.log_packed``: one round trip for thousands of predictions, GIL released while
it waits), so Redis latency never reaches scoring. The queue is bounded in rows: when Redis
is down for long, the oldest rows are dropped and counted (never silently lost, never unbounded memory). OIP
predictions (several rows) are not logged: a label joins one row.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from streamer.core.errors import StateStoreError
from streamer.core.ledger import Release
from streamer.core.output_records import OutputRecords
from streamer.core.scoring import ScoredBatch
from streamer.core.state import LoggedBatch, StateStore
from streamer.services.runner import Background, Service

log = logging.getLogger(__name__)


class PredictionLog(Background):
    def __init__(
        self,
        store: StateStore,
        observer: Any,
        max_queued: int = 200_000,
        flush_every_s: float = 0.05,
        max_rows_per_call: int = 20_000,
    ) -> None:
        self._store = store
        self._observer = observer
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()  # (packed batch, predictions)
        self._queued_rows = 0
        self._max_queued = max_queued
        self._max_rows_per_call = max_rows_per_call
        self._lock = threading.Lock()
        self._failing = False
        self.dropped = 0
        self.logged = 0
        self.submitted = 0  # every prediction ever handed over; ``logged + dropped`` catches up with it
        self.service = Service(
            "prediction-log", self._step, interval_s=flush_every_s, on_stop=self._drain, error_backoff_s=1.0
        )

    # ------------------------------------------------------------------------------------------ observer

    def on_released(self, release: Release[ScoredBatch], out: OutputRecords) -> None:
        """Log the released predictions, and the challengers' predictions of the same rows (shadow scoring),
        so that one label evaluates both."""
        now = time.time()
        send = None if release.send is None else set(release.send)
        scored = release.result
        summaries = [(s, False) for s in scored.models]
        if scored.shadow is not None:
            summaries += [(s, True) for s in scored.shadow.models]
        batches = []
        for summary, shadow in summaries:
            if not summary.logged_ids:
                continue
            card = summary.card
            ids, scores, features = summary.logged_ids, summary.logged_scores, summary.logged_features
            if send is not None:
                keep = [k for k, row in enumerate(summary.logged_rows) if row in send]
                ids, scores = [ids[k] for k in keep], [scores[k] for k in keep]
                features = features[keep] if features is not None else None
            if ids:
                batches.append(
                    LoggedBatch(card.name, str(card.version), card.threshold, now, ids, scores, features, shadow)
                )
        if batches:
            self.submit(batches)

    def submit(self, batches: list[LoggedBatch]) -> None:
        packed = [(batch.pack(), len(batch)) for batch in batches]
        with self._lock:
            for entry in packed:
                self._queue.append(entry)
                self._queued_rows += entry[1]
                self.submitted += entry[1]
            dropped = 0
            while self._queued_rows > self._max_queued and self._queue:
                _, rows = self._queue.popleft()
                self._queued_rows -= rows
                dropped += rows
            self.dropped += dropped
        if dropped:
            self._observer.on_prediction_log_dropped(dropped)

    # ------------------------------------------------------------------------------------------ service

    def _take(self) -> tuple[list[tuple[bytes, int]], int]:
        with self._lock:
            taken, rows = [], 0
            while self._queue and rows < self._max_rows_per_call:
                entry = self._queue.popleft()
                taken.append(entry)
                rows += entry[1]
            self._queued_rows -= rows
            return taken, rows

    def _step(self) -> bool:
        taken, rows = self._take()
        if not taken:
            return False
        try:
            self.logged += self._store.log_packed([blob for blob, _ in taken])
        except StateStoreError as exc:  # Redis down: put the rows back (bounded by max_queued) and retry later
            self._observer.on_redis_error("log_predictions")
            if not exc.retriable:
                with self._lock:
                    self._queue.extendleft(reversed(taken))
                    self._queued_rows += rows
                raise  # not an outage: the service stops and reports it (runner.py)
            if not self._failing:
                log.warning("cannot log %s predictions to Redis (%s); retrying", rows, exc)
            self._failing = True
            with self._lock:
                self._queue.extendleft(reversed(taken))
                self._queued_rows += rows
            self.service.wait(1.0)
            return False
        if self._failing:
            log.info("prediction log to Redis is back")
            self._failing = False
        return True

    def _drain(self) -> None:
        """On stop: one last attempt for what is queued (bounded: a dead Redis is not waited for)."""
        taken, rows = self._take()
        if taken:
            try:
                self.logged += self._store.log_packed([blob for blob, _ in taken])
            except StateStoreError as exc:
                log.warning("%s predictions not logged at stop (%s)", rows, exc)

    def wait_logged(self, timeout_s: float) -> bool:
        """Wait until every prediction submitted so far is logged (or dropped); False on timeout.

        The label consumer calls it before applying labels: after a Redis outage both the log's backlog and the
        held labels flush at once, and a label applied before its prediction is logged would count as unknown.
        Bounded, so a stuck log never stops the labels for long.
        """
        target = self.submitted
        deadline = time.monotonic() + timeout_s
        while self.logged + self.dropped < target:
            if time.monotonic() >= deadline or self.service.stopping:
                return False
            time.sleep(0.02)
        return True
