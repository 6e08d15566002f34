"""The intake policy both engines follow (``core.intake``): chunk, hand-over wait, lag, drained, fetch wait."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer.core.intake import (
    BACKLOG_GATHER_S,
    MAX_HANDOVER_WAIT_S,
    MIN_HANDOVER_WAIT_S,
    FetchWait,
    IntakePolicy,
    lag,
)

policies = st.builds(
    IntakePolicy.of,
    st.integers(1, 5000),
    st.floats(0, 2, allow_nan=False),
    st.integers(0, 100),
    st.integers(0, 2000),
    adjusts_fetch_wait=st.booleans(),
)
lags = st.lists(st.none() | st.integers(0, 10_000) | st.just(0), min_size=1, max_size=8)


@given(st.none() | st.integers(-1001, 10**9), st.none() | st.integers(0, 10**9))
def test_lag_is_what_lies_between_the_position_and_the_high_watermark(high: int | None, last: int | None) -> None:
    found = lag(high, last)
    if high is None or high < 0 or last is None:
        assert found is None
        return
    assert found is not None and found >= 0
    assert found == len(range(last + 1, high))  # the offsets after the last consumed one, below the watermark


@given(policies)
def test_a_chunk_holds_batches_and_the_handover_wait_stays_short(policy: IntakePolicy) -> None:
    assert policy.chunk >= 2000
    assert MIN_HANDOVER_WAIT_S <= policy.handover_wait_s <= MAX_HANDOVER_WAIT_S


@given(st.integers(1, 5000), st.floats(0, 2, allow_nan=False))
def test_the_chunk_fits_a_full_batch_and_the_wait_never_exceeds_the_batch_wait(size: int, wait_s: float) -> None:
    policy = IntakePolicy.of(size, wait_s, 5, 500, adjusts_fetch_wait=True)
    assert policy.chunk >= size
    assert policy.handover_wait_s <= max(wait_s, MIN_HANDOVER_WAIT_S)


@given(policies, st.integers(0, 20_000), lags, st.integers(0, 20_000), st.floats(0, 1, allow_nan=False))
def test_gathering_goes_on_only_behind_below_a_chunk_and_briefly(
    policy: IntakePolicy, consumed: int, partition_lags: list[int | None], held: int, held_for_s: float
) -> None:
    verdict = policy.judge(consumed, partition_lags, policy.fetch_wait())
    gathers = policy.gather(verdict, held, held_for_s)
    assert gathers == (verdict.behind and held < policy.chunk and held_for_s < BACKLOG_GATHER_S)
    if verdict.drained:
        assert not gathers  # light load: what came is handed over at once


@given(policies, st.integers(0, 20_000), lags)
def test_drained_means_less_than_a_full_batch_waiting_and_excludes_behind(
    policy: IntakePolicy, consumed: int, partition_lags: list[int | None]
) -> None:
    verdict = policy.judge(consumed, partition_lags, policy.fetch_wait())
    full = consumed >= policy.chunk
    caught_up = all(known is not None and known < policy.batch_size for known in partition_lags)
    unknown_caught_up = all(known is None or known < policy.batch_size for known in partition_lags)
    if caught_up:
        assert verdict.drained  # no full batch known to be waiting anywhere
    elif not full and unknown_caught_up:
        assert verdict.drained  # nothing more buffered, and no full batch known to be waiting
    else:
        assert not verdict.drained  # a full batch or more waiting, or a full chunk of unknown lags
    assert not (verdict.drained and verdict.behind)
    if not verdict.drained and (full or sum(k or 0 for k in partition_lags) >= policy.chunk):
        assert verdict.behind


@given(policies, st.lists(st.tuples(st.integers(0, 20_000), lags), max_size=40))
def test_the_fetch_wait_rises_only_after_two_chunks_behind_and_only_where_it_can(
    policy: IntakePolicy, chunks: list[tuple[int, list[int | None]]]
) -> None:
    state = policy.fetch_wait()
    run = 0
    for consumed, partition_lags in chunks:
        verdict = policy.judge(consumed, partition_lags, state)
        run = run + 1 if verdict.behind else 0
        if not policy.adjusts_fetch_wait:
            assert verdict.fetch_wait_ms is None
        else:
            assert verdict.fetch_wait_ms == (policy.fetch_backlog_ms if run >= 2 else policy.fetch_idle_ms)


@given(st.lists(st.booleans(), max_size=50), st.integers(1, 4))
def test_the_fetch_wait_is_long_only_after_enough_chunks_behind_in_a_row(behind: list[bool], after: int) -> None:
    wait = FetchWait(5, 500, raise_after=after)
    run = 0
    for each in behind:
        run = run + 1 if each else 0
        assert wait.update(each) == (500 if run >= after else 5)


def test_the_decisions_at_a_glance() -> None:
    policy = IntakePolicy.of(256, 0.005, 5, 500, adjusts_fetch_wait=True)
    state = policy.fetch_wait()
    assert (policy.chunk, policy.handover_wait_s) == (2048, 0.005)
    assert policy.judge(3, [0, 0], state).drained  # light load: caught up
    assert policy.judge(3, [0, 40], state).drained  # fewer than a full batch waiting: not worth holding rows for
    assert not policy.judge(3, [0, 256], state).drained  # a short fetch, a full batch waiting on the broker
    assert policy.judge(3, [None], state).drained  # no high watermark yet, nothing more buffered
    first = policy.judge(2048, [900, 1200], state)
    second = policy.judge(2048, [900, 1200], state)
    assert first.behind and (first.fetch_wait_ms, second.fetch_wait_ms) == (5, 500)
    assert policy.judge(2048, [0], state).fetch_wait_ms == 5  # caught up: back to the short wait
    batch = IntakePolicy.of(256, 0.05, 5, 500, adjusts_fetch_wait=False)
    assert (batch.handover_wait_s, batch.judge(2048, [900], batch.fetch_wait()).fetch_wait_ms) == (0.005, None)
