"""What the data path's shell (``pipeline.ScoringPipeline``) is plugged into: the topics it serves, the output sink
that takes released batches, the read-back of a new partition's outputs, and the scoring function with
``score_job``, the guard every scoring job runs through on the pool's thread. The engines and the composition
root build these; the pipeline only calls them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from streamer.core.ledger import ReadBack
from streamer.core.output_records import OutputRecords
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Records

log = logging.getLogger(__name__)

Recover = Callable[[list[int]], dict[int, ReadBack]]  # partitions -> what their output logs already hold
ScoreFn = Callable[[Records], ScoredBatch]
Done = Callable[[BaseException | None], None]


class OutputSink(Protocol):
    """Where released batches go (``adapters.kafka_producer`` in the worker, a fake in unit tests)."""

    def send(self, out: OutputRecords, on_done: Done) -> None: ...
    def has_room(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class PipelineTopics:
    requests: str
    predictions: str
    dlq: str


def score_job(score: ScoreFn, job: list[Records]) -> tuple[list[ScoredBatch], float]:
    """One scoring job (a thread of the pool, or the loop), and its seconds. A bug must not stall a partition on
    this input: a batch whose scoring raises becomes ``scoring-failed`` dead letters (logged), and the worker
    goes on."""
    started = time.perf_counter()
    scored = []
    for records in job:
        try:
            scored.append(score(records))
        except Exception as exc:
            log.exception("scoring %s rows of partition %s failed unexpectedly", len(records), records.partition)
            scored.append(ScoredBatch.failed(records, f"internal error: {exc!r}"))
    return scored, time.perf_counter() - started
