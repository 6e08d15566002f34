"""Where a request's latency goes: the stages of the data path, and one sampled request's way through them.

One request per closed batch -- its first row -- is sampled, so the cost is a few values per batch and nothing per
row. It is stamped as it reaches each stage, in this order (``STAGES``; each label names the stage reached, and
its figure is the time from the stage before):

1. ``consumed``: from the record's Kafka timestamp (the broker's append time, or the producer's create time:
   then the producer's clock against ours, and a negative difference counts as 0) to the engine getting it
   from its consumer;
2. ``batched``: to its ledger closing its batch (the hand-over to the event loop, and the wait for batch-mates);
3. ``scored``: to its batch's scoring job coming back to the loop (the dispatch, the thread hop, the scoring);
4. ``produced``: to its outputs being handed to the producer (waiting for earlier batches, encoding);
5. ``delivered``: to the delivery report of its batch reaching the loop (the broker's acknowledgement);
6. ``committed``: to a commit covering its offset succeeding.

A sample whose batch writes nothing (every row found in the log by the read-back) is dropped after ``scored``:
it produces nothing to time. Pure: the shell reads its clocks and hands the times in; nothing here reads one.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.core.ledger import Batch

STAGES = ("consumed", "batched", "scored", "produced", "delivered", "committed")


class StageOrderError(ValueError):
    """A sample was stamped out of order (a bug in the shell, never bad input)."""


@dataclass(slots=True)
class StageSample:
    """One sampled request: where it is (``partition``, ``offset``), when it reached its last stage (``at``, the
    shell's monotonic clock, seconds) and how many stages it has reached."""

    partition: int
    offset: int
    at: float
    reached: int = 1

    @classmethod
    def consumed(
        cls, partition: int, offset: int, appended_ms: float, consumed_at: float, now: float, wall_now_ms: float
    ) -> tuple[StageSample, float]:
        """The sample of the request at ``offset``, whose record timestamp is ``appended_ms`` (wall clock,
        milliseconds) and which was consumed at ``consumed_at`` of the shell's clock; ``now`` and
        ``wall_now_ms`` are the shell's clock and the wall clock read together. Returns it with its time to
        ``consumed`` (seconds, never negative)."""
        consumed_wall_s = wall_now_ms / 1000.0 - (now - consumed_at)
        return cls(partition, offset, consumed_at), max(consumed_wall_s - appended_ms / 1000.0, 0.0)

    def reach(self, stage: str, now: float) -> float:
        """Stamp the next stage at ``now``; returns the seconds since the stage before (never negative)."""
        if self.reached >= len(STAGES) or STAGES[self.reached] != stage:
            done = STAGES[self.reached - 1]
            raise StageOrderError(f"sample {self.partition}:{self.offset} reached {stage!r} after {done!r}")
        seconds = max(now - self.at, 0.0)
        self.at = now
        self.reached += 1
        return seconds


Observations = list[tuple[str, float]]  # (stage, seconds since the stage before)


class StageSamples:
    """The samples in flight: by batch (partition, seq) until their batch is delivered, then by partition until
    a commit covers them. At most ``max_uncommitted`` wait per partition for a commit (the
    oldest go first: commits failing for long must not grow memory). Every method returns the observations it
    made, for the shell to hand to its observer."""

    def __init__(self, max_uncommitted: int = 1024) -> None:
        self._batches: dict[tuple[int, int], StageSample] = {}
        self._uncommitted: dict[int, list[StageSample]] = {}
        self._max_uncommitted = max_uncommitted

    def __len__(self) -> int:
        return len(self._batches) + sum(map(len, self._uncommitted.values()))

    def batched(self, batch: Batch, now: float, wall_now_ms: float) -> Observations:
        """Sample the first row of a closed batch: consumed at the batch's ``opened_at`` (the ledger's clock is
        the shell's: it counts from when the engine got the row) and batched at its ``closed_at``; ``now`` and
        ``wall_now_ms`` are the shell's clock and the wall clock read together. A record without a timestamp (not
        positive) is sampled from ``consumed`` on, without its time to it."""
        records = batch.records
        appended_ms = records.timestamps_ms[0]
        partition, offset = batch.partition, records.offsets[0]
        sample, to_consumed = StageSample.consumed(partition, offset, appended_ms, batch.opened_at, now, wall_now_ms)
        self._batches[(partition, batch.seq)] = sample
        observed = [("consumed", to_consumed)] if appended_ms > 0 else []
        return [*observed, ("batched", sample.reach("batched", batch.closed_at))]

    def reached(self, partition: int, seq: int, stage: str, now: float) -> Observations:
        """Batch ``seq`` was ``scored`` or ``produced`` at ``now``."""
        sample = self._current(partition, seq, stage)
        return [] if sample is None else [(stage, sample.reach(stage, now))]

    def _current(self, partition: int, seq: int, stage: str) -> StageSample | None:
        """Batch ``seq``'s sample if ``stage`` is the one it reaches next. A sample out of step -- a batch of a
        partition's earlier ownership finishing after it came back (its numbers start again) -- is dropped:
        timing never stops the data path."""
        sample = self._batches.get((partition, seq))
        if sample is not None and STAGES[sample.reached] != stage:
            del self._batches[(partition, seq)]
            return None
        return sample

    def drop(self, partition: int, seq: int) -> None:
        """Batch ``seq`` writes nothing: its sample has nothing more to time."""
        self._batches.pop((partition, seq), None)

    def delivered(self, partition: int, seq: int, now: float) -> Observations:
        sample = self._current(partition, seq, "delivered")
        if sample is None:
            return []
        del self._batches[(partition, seq)]
        waiting = self._uncommitted.setdefault(partition, [])
        waiting.append(sample)
        if len(waiting) > self._max_uncommitted:
            del waiting[0]
        return [("delivered", sample.reach("delivered", now))]

    def committed(self, partition: int, position: int, now: float) -> Observations:
        """The partition's position ``position`` (the next offset to read) was committed at ``now``."""
        waiting = self._uncommitted.get(partition)
        if not waiting:
            return []
        covered = [sample for sample in waiting if sample.offset < position]  # delivered in any order
        waiting[:] = [sample for sample in waiting if sample.offset >= position]
        return [("committed", sample.reach("committed", now)) for sample in covered]

    def forget(self, partition: int) -> None:
        """The partition went (revoked, lost): its samples are dropped."""
        self._uncommitted.pop(partition, None)
        for key in [key for key in self._batches if key[0] == partition]:
            del self._batches[key]
