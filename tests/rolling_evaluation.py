"""``RollingEvaluation``: the bucketed evaluation state of one model version in memory -- the test oracle.

{(window name, bucket): statistics vector}, built from ``streamer.core.evaluation``'s ``stats_of`` and read
with its ``metrics_of``; the stores (``RedisStateStore``, ``tests/memory_state_store.py``) keep the same
buckets and are tested against it.
"""

from __future__ import annotations

import numpy as np

from streamer.core.evaluation import DEFAULT_WINDOWS, STATS_SIZE, Metrics, WindowSpec, metrics_of, stats_of


class RollingEvaluation:
    """In-memory bucketed state of one model version: {(window name, bucket): stats vector}."""

    def __init__(self, windows: tuple[WindowSpec, ...] = DEFAULT_WINDOWS, threshold: float = 0.5) -> None:
        self.windows = windows
        self.threshold = threshold
        self.buckets: dict[tuple[str, int], np.ndarray] = {}

    def update(self, now: float, scores: np.ndarray, labels: np.ndarray) -> None:
        stats = stats_of(scores, labels, self.threshold)
        for window in self.windows:
            key = (window.name, window.bucket_of(now))
            self.buckets[key] = self.buckets.get(key, 0) + stats

    def revert(self, now: float, scores: np.ndarray, labels: np.ndarray) -> None:
        """Undo an ``update`` made at ``now`` (a label withdrawn or replayed by mistake)."""
        stats = stats_of(scores, labels, self.threshold)
        for window in self.windows:
            key = (window.name, window.bucket_of(now))
            self.buckets[key] = self.buckets.get(key, 0) - stats

    def merge(self, other: RollingEvaluation) -> None:
        for key, stats in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + stats

    def get(self, now: float, window: WindowSpec) -> Metrics:
        total = np.zeros(STATS_SIZE)
        for bucket in window.live_buckets(now):
            stats = self.buckets.get((window.name, bucket))
            if stats is not None:
                total += stats
        return metrics_of(total)

    def evict(self, now: float) -> None:
        """Drop buckets no window can see any more."""
        live = {(w.name, b) for w in self.windows for b in w.live_buckets(now)}
        self.buckets = {k: v for k, v in self.buckets.items() if k in live}
