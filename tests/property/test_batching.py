"""Batching invariants with a fake clock: size, order, deadlines, drained polls."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer.core.batching import Batcher, BatchPolicy
from streamer.core.types import Records

policies = st.builds(BatchPolicy, st.integers(1, 20), st.floats(0, 1, allow_nan=False), st.booleans())
# a timeline: (gap before the step in seconds, chunk size (0 = a poll), is the consumer drained after it)
steps = st.lists(st.tuples(st.floats(0, 0.5, allow_nan=False), st.integers(0, 30), st.booleans()), max_size=120)


def chunk(first: int, size: int) -> Records:
    return Records.of("t", 0, range(first, first + size), [b"%d" % o for o in range(first, first + size)])


@given(policies, steps)
def test_batches_respect_size_order_deadlines_and_drains(
    policy: BatchPolicy, timeline: list[tuple[float, int, bool]]
) -> None:
    batcher = Batcher(policy)
    now = 0.0
    added: list[int] = []
    batches: list[Records] = []
    arrived: dict[int, float] = {}
    closed_at: dict[int, float] = {}

    def record(closed: list[Records], at: float) -> None:
        for batch in closed:
            batch.check()
            batches.append(batch)
            for offset in batch.offsets:
                closed_at[offset] = at

    for gap, size, drained in timeline:
        # a shell that honours next_deadline: poll exactly at the deadline if it comes before the next step
        deadline = batcher.next_deadline()
        if deadline is not None and deadline <= now + gap:
            closed = batcher.poll(deadline)
            record([closed] if closed is not None else [], deadline)
        now += gap
        if size:
            records = chunk(len(added), size)
            added += records.offsets
            for offset in records.offsets:
                arrived[offset] = now
            record(batcher.add(records, now), now)
        closed = batcher.poll(now, drained=drained)
        record([closed] if closed is not None else [], now)
        if drained and policy.close_when_drained:
            assert len(batcher) == 0 and batcher.next_deadline() is None  # a drained poll leaves nothing open
    # nothing was held past its deadline (checked before the final flush, which closes whatever is open)
    for batch in batches:
        assert closed_at[batch.offsets[0]] <= arrived[batch.offsets[0]] + policy.max_wait_s + 1e-9
    flushed = batcher.flush()
    record([flushed] if flushed is not None else [], now)
    assert all(1 <= len(b) <= policy.max_size for b in batches)
    assert [offset for batch in batches for offset in batch.offsets] == added
    assert [value for batch in batches for value in batch.values] == [b"%d" % o for o in added]
    assert len(batcher) == 0 and batcher.next_deadline() is None


def test_a_batch_closes_at_max_size_at_its_deadline_and_when_drained() -> None:
    batcher = Batcher(BatchPolicy(max_size=2, max_wait_s=0.01))
    assert batcher.add(chunk(0, 1), 0.0) == []
    assert batcher.next_deadline() == 0.01
    assert batcher.poll(0.005) is None
    [full] = batcher.add(chunk(1, 1), 0.006)
    assert full.offsets == [0, 1]
    assert batcher.add(chunk(2, 1), 1.0) == []
    assert batcher.poll(1.0099) is None
    assert batcher.poll(1.01).offsets == [2]
    assert batcher.poll(5.0) is None
    assert batcher.add(chunk(3, 5), 6.0)[1].offsets == [5, 6]  # a large chunk fills several batches at once
    assert batcher.poll(6.0, drained=True).offsets == [7]  # nothing more buffered: no idle wait


def test_without_close_when_drained_a_batch_waits_for_its_deadline() -> None:
    batcher = Batcher(BatchPolicy(max_size=10, max_wait_s=0.01, close_when_drained=False))
    batcher.add(chunk(0, 3), 0.0)
    assert batcher.poll(0.0, drained=True) is None
    assert batcher.poll(0.01).offsets == [0, 1, 2]
