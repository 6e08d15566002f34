"""Batching and reorder invariants (ARCHITECTURE.md), with a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from streamer.core.batching import Batcher, BatchPolicy
from streamer.core.reorder import ReorderBuffer

policies = st.builds(BatchPolicy, st.integers(1, 20), st.floats(0, 1, allow_nan=False))
# a timeline: (gap before the next event in seconds, is it an item or a poll at the deadline)
steps = st.lists(st.tuples(st.floats(0, 0.5, allow_nan=False), st.booleans()), max_size=200)


@given(policies, steps)
def test_batches_respect_size_order_and_deadlines(policy: BatchPolicy, timeline: list[tuple[float, bool]]) -> None:
    batcher: Batcher[int] = Batcher(policy)
    now = 0.0
    added: list[int] = []
    batches: list[list[int]] = []
    first_seen: dict[int, float] = {}
    closed_at: dict[int, float] = {}

    def record(batch: list[int] | None, at: float) -> None:
        if batch:
            batches.append(batch)
            for item in batch:
                closed_at[item] = at

    for gap, is_item in timeline:
        # a shell that honours next_deadline: poll exactly at the deadline if it comes before the next event
        deadline = batcher.next_deadline()
        if deadline is not None and deadline <= now + gap:
            record(batcher.poll(deadline), deadline)
        now += gap
        if is_item:
            item = len(added)
            added.append(item)
            first_seen[item] = now
            record(batcher.add(item, now), now)
        else:
            record(batcher.poll(now), now)
    # nothing was held past its deadline (checked before the final flush, which closes whatever is open)
    for batch in batches:
        assert closed_at[batch[0]] <= first_seen[batch[0]] + policy.max_wait_s + 1e-9
    record(batcher.flush(), now)
    assert all(1 <= len(b) <= policy.max_size for b in batches)
    assert [item for batch in batches for item in batch] == added
    assert len(batcher) == 0 and batcher.next_deadline() is None


def test_a_batch_closes_at_max_size_and_at_its_deadline() -> None:
    batcher: Batcher[str] = Batcher(BatchPolicy(max_size=2, max_wait_s=0.01))
    assert batcher.add("a", 0.0) is None
    assert batcher.next_deadline() == 0.01
    assert batcher.poll(0.005) is None
    assert batcher.add("b", 0.006) == ["a", "b"]
    assert batcher.add("c", 1.0) is None
    assert batcher.poll(1.0099) is None
    assert batcher.poll(1.01) == ["c"]
    assert batcher.poll(5.0) is None


class ReorderMachine(RuleBasedStateMachine):
    """The reorder buffer against a model: a sorted list of expected offsets and a dict of finished ones."""

    pending = Bundle("pending")

    def __init__(self) -> None:
        super().__init__()
        self.buffer: ReorderBuffer[str] = ReorderBuffer()
        self.next_offset = 0
        self.expected: list[int] = []
        self.finished: dict[int, str] = {}
        self.released: list[int] = []
        self.committable: int | None = None

    @rule(target=pending, gap=st.integers(0, 3))
    def expect(self, gap: int) -> int:
        offset = self.next_offset + gap
        self.next_offset = offset + 1
        self.buffer.expect(offset)
        self.expected.append(offset)
        return offset

    @rule(offset=pending)
    def push(self, offset: int) -> None:
        if offset in self.finished or offset in self.released:
            return
        self.buffer.push(offset, f"r{offset}")
        self.finished[offset] = f"r{offset}"

    @rule()
    def pop(self) -> None:
        ready = self.buffer.pop_ready()
        model: list[tuple[int, str]] = []
        while self.expected and self.expected[0] in self.finished:
            offset = self.expected.pop(0)
            model.append((offset, self.finished.pop(offset)))
        assert ready == model
        self.released += [o for o, _ in ready]
        if ready:
            assert self.buffer.committable_offset() == ready[-1][0] + 1

    @precondition(lambda self: self.released)
    @rule()
    def expecting_an_old_offset_is_refused(self) -> None:
        try:
            self.buffer.expect(self.released[-1])
        except ValueError:
            return
        raise AssertionError("an offset at or below the last one was accepted")

    @invariant()
    def released_offsets_strictly_increase(self) -> None:
        assert all(a < b for a, b in zip(self.released, self.released[1:], strict=False))

    @invariant()
    def committable_never_goes_backwards(self) -> None:
        current = self.buffer.committable_offset()
        if self.committable is not None:
            assert current is not None and current >= self.committable
        self.committable = current

    @invariant()
    def depth_is_what_was_not_released(self) -> None:
        assert len(self.buffer) == len(self.expected)


TestReorder = ReorderMachine.TestCase


def test_pushing_an_unexpected_or_repeated_offset_is_refused() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer()
    buffer.expect(5)
    buffer.push(5, 1)
    for offset in (5, 6):
        try:
            buffer.push(offset, 2)
        except KeyError:
            continue
        raise AssertionError(f"push({offset}) accepted")
    assert buffer.pop_ready() == [(5, 1)]
    assert buffer.committable_offset() == 6
