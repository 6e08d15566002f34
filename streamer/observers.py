"""What the data path tells the outside: the pipeline's hooks, and several observers behind them as one.

Metrics and the prediction log are observers of the pipeline (``PipelineObserver``); the pipeline never touches
a metric itself, and an observer implements only the hooks it cares about (``FanOut`` calls each observer
that has the hook).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from streamer.core.ledger import Batch, Release
from streamer.core.output_records import OutputRecords
from streamer.core.scoring import ScoredBatch


class PipelineObserver(Protocol):
    """Metrics and the prediction log hook in here; the pipeline never touches a metric itself."""

    def on_scored(self, batches: Sequence[Batch], scored: Sequence[ScoredBatch], scoring_s: float) -> None: ...
    def on_released(self, release: Release[ScoredBatch], out: OutputRecords) -> None: ...
    def on_skipped(self, partition: int, count: int) -> None: ...
    def on_depth(self, partition: int, rows: int) -> None: ...
    def on_inflight(self, jobs: int) -> None: ...
    def on_lag(self, partition: int, messages: int) -> None: ...
    def on_stage(self, stage: str, seconds: float) -> None: ...
    def on_partitions_gone(self, partitions: Sequence[int]) -> None: ...


class FanOut:
    """Several observers as one (metrics, prediction log): each hook calls every observer that has it, so an
    observer implements only the hooks it cares about."""

    def __init__(self, *observers: object) -> None:
        self._observers = observers

    def __getattr__(self, hook: str) -> Callable[..., None]:
        targets = [getattr(o, hook) for o in self._observers if hasattr(o, hook)]

        def call(*args: Any) -> None:
            for target in targets:
                target(*args)

        setattr(self, hook, call)  # built once per hook: hooks run per batch on the loop
        return call
