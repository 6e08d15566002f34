"""The stage samples (``core.stages``): each sampled request is timed from stage to stage in the data path's
order, never negatively, kept only while its partition is owned, and bounded while commits fail."""

from __future__ import annotations

import pytest

from streamer.core.ledger import Batch
from streamer.core.stages import STAGES, StageOrderError, StageSample, StageSamples
from streamer.core.types import Records


def batch(partition: int, seq: int, offset: int, appended_ms: float, consumed_at: float, closed_at: float) -> Batch:
    records = Records.of("req", partition, [offset], [b"{}"], timestamps_ms=[int(appended_ms)])
    return Batch(partition, seq, records, consumed_at, closed_at)


def test_a_sample_is_timed_from_its_kafka_timestamp_through_every_stage_in_order() -> None:
    samples = StageSamples()
    # consumed at 10.0 of the shell's clock; the clocks read 10.5 and 1_000_000.5 s of wall time together, so it
    # was consumed at wall 1_000_000.0 s, 30 ms after its record's timestamp
    observed = samples.batched(batch(3, 0, 42, 999_999_970.0, 10.0, 10.002), 10.5, 1_000_000_500.0)
    assert observed == [("consumed", pytest.approx(0.03)), ("batched", pytest.approx(0.002))]
    assert samples.reached(3, 0, "scored", 10.010) == [("scored", pytest.approx(0.008))]
    assert samples.reached(3, 0, "produced", 10.011) == [("produced", pytest.approx(0.001))]
    assert samples.delivered(3, 0, 10.020) == [("delivered", pytest.approx(0.009))]
    assert samples.committed(3, 42, 10.5) == []  # position 42: offset 42 not covered yet
    assert samples.committed(3, 43, 11.0) == [("committed", pytest.approx(0.98))]
    assert len(samples) == 0


def test_a_producer_clock_ahead_of_ours_and_a_record_without_timestamp_never_give_negative_times() -> None:
    sample, to_consumed = StageSample.consumed(0, 1, 2_000_000.0, 5.0, 5.0, 1_000_000.0)
    assert to_consumed == 0.0
    assert sample.reach("batched", 4.0) == 0.0
    observed = StageSamples().batched(batch(0, 0, 1, -1, 5.0, 5.001), 5.001, 1_000_000.0)
    assert [stage for stage, _ in observed] == ["batched"]


def test_stages_out_of_order_are_refused_by_a_sample_and_dropped_by_the_bookkeeping() -> None:
    sample, _ = StageSample.consumed(0, 1, 0, 1.0, 1.0, 0.0)
    with pytest.raises(StageOrderError):
        sample.reach("scored", 2.0)
    samples = StageSamples()
    samples.batched(batch(0, 7, 1, 1.0, 1.0, 1.0), 1.0, 1000.0)
    # a batch of an earlier ownership with the same number, delivered late: the sample is dropped, nothing raises
    assert samples.delivered(0, 7, 2.0) == []
    assert samples.reached(0, 7, "scored", 2.0) == [] and len(samples) == 0


def test_samples_of_a_partition_that_goes_are_dropped_and_waiting_ones_are_bounded() -> None:
    samples = StageSamples(max_uncommitted=3)
    for seq in range(5):
        samples.batched(batch(1, seq, 10 * seq, 1.0, 1.0, 1.0), 1.0, 1000.0)
        for stage in STAGES[2:4]:
            samples.reached(1, seq, stage, 2.0)
        samples.delivered(1, seq, 3.0)
    samples.batched(batch(2, 0, 5, 1.0, 1.0, 1.0), 1.0, 1000.0)
    assert len(samples) == 4  # three waiting for a commit on partition 1, one in flight on partition 2
    assert [stage for stage, _ in samples.committed(1, 1000, 4.0)] == ["committed"] * 3
    samples.forget(2)
    assert len(samples) == 0


def test_samples_delivered_out_of_order_are_each_committed_once_covered() -> None:
    samples = StageSamples()
    for seq, offset in ((0, 10), (1, 20)):
        samples.batched(batch(0, seq, offset, 1.0, 1.0, 1.0), 1.0, 1000.0)
        samples.reached(0, seq, "scored", 1.0)
        samples.reached(0, seq, "produced", 1.0)
    samples.delivered(0, 1, 2.0)  # the later batch first
    samples.delivered(0, 0, 2.0)
    assert len(samples.committed(0, 15, 3.0)) == 1
    assert len(samples.committed(0, 21, 3.0)) == 1
    assert len(samples) == 0
