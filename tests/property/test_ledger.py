"""The partition ledger against a naive model of Kafka, driven through crashes.

The machine owns a source partition (offsets with gaps), a committed group offset, and two output logs
(predictions, dead letters) fed by FIFO send queues -- an idempotent producer: each log holds a prefix of what
was sent to it, in order. Rules consume, poll, score batches in any order, land sends one at a time, report
deliveries, commit, fail a delivery, revoke mid-flight and crash (a random prefix of each queue lands, the rest
is lost), restarting from the committed offset with what the read-back finds in the logs (every source offset
from the committed position on). Some requests change outcome (prediction / dead letter) from one incarnation
to the next. Invariants hold at every step; at the end the machine runs everything to completion and requires
**exactly one output per source offset**, in offset order among those whose outcome never changed -- the
guarantee the ledger's skip rule and commit positions exist for.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamer.core.batching import BatchPolicy
from streamer.core.ledger import LedgerError, PartitionLedger, ReadBack
from streamer.core.types import Records

PREDICTION, DEAD_LETTER = 0, 1


def kind_of(offset: int, incarnation: int) -> int:
    """Most requests always end the same way; some change between incarnations (a version added or removed
    across the restart, a transient scoring failure): the skip rule must not depend on the kind."""
    kind = DEAD_LETTER if offset % 3 == 0 else PREDICTION
    return 1 - kind if offset % 5 == 4 and incarnation % 2 == 0 else kind


def is_stable(offset: int) -> bool:
    return offset % 5 != 4


@dataclass
class Sent:
    offset: int
    seq: int
    incarnation: int


@dataclass
class Incarnation:
    number: int
    ledger: PartitionLedger[str]
    position: int  # index into the source of the next offset to consume
    in_flight: dict[int, list[int]] = field(default_factory=dict)  # seq -> offsets
    unlanded: dict[int, int] = field(default_factory=dict)  # seq -> sends not yet in the log
    released: list[int] = field(default_factory=list)
    last_committable: int | None = None
    failed: bool = False
    halted: bool = False


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.source: list[int] = []
        self.committed = 0
        self.logs: tuple[list[int], list[int]] = ([], [])
        self.queues: tuple[deque[Sent], deque[Sent]] = (deque(), deque())
        self.now = 0.0
        self.count = 0
        self.policy = BatchPolicy(4, 0.01)
        self.exact_read_back = True
        self.current = self._start()

    # ---------------------------------------------------------------------------------------- helpers

    def _start(self) -> Incarnation:
        logs = self.logs
        answered = frozenset(o for o in logs[PREDICTION] + logs[DEAD_LETTER] if o >= self.committed)
        marks = ReadBack(max(logs[PREDICTION], default=-1), max(logs[DEAD_LETTER], default=-1))
        if self.exact_read_back:  # as the worker's read-back: every output from the committed position on
            marks = ReadBack(marks.prediction, marks.dead_letter, answered, self.committed - 1)
        position = next((i for i, o in enumerate(self.source) if o >= self.committed), len(self.source))
        self.count += 1
        return Incarnation(self.count, PartitionLedger(0, self.policy, marks), position)

    def _track(self, batches: list) -> None:
        for batch in batches:
            self.current.in_flight[batch.seq] = list(batch.records.offsets)

    def _land(self, kind: int) -> None:
        sent = self.queues[kind].popleft()
        self.logs[kind].append(sent.offset)
        if sent.incarnation == self.current.number and not self.current.failed:
            self.current.unlanded[sent.seq] -= 1
            if self.current.unlanded[sent.seq] == 0:
                del self.current.unlanded[sent.seq]
                self.current.ledger.delivered(sent.seq, self.now)

    def _crash(self, landed: tuple[int, int]) -> None:
        for kind in (PREDICTION, DEAD_LETTER):
            for _ in range(min(landed[kind], len(self.queues[kind]))):
                self.logs[kind].append(self.queues[kind].popleft().offset)
            self.queues[kind].clear()  # lost with the process
        self.current = self._start()

    # ---------------------------------------------------------------------------------------- rules

    @rule(gaps=st.lists(st.integers(0, 2), min_size=1, max_size=6))
    def produce_requests(self, gaps: list[int]) -> None:
        offset = self.source[-1] + 1 if self.source else 0
        for gap in gaps:
            offset += gap  # transaction markers leave holes
            self.source.append(offset)
            offset += 1

    @precondition(lambda self: self.current.position < len(self.source))
    @rule(size=st.integers(1, 6), seconds=st.floats(0, 0.02))
    def consume(self, size: int, seconds: float) -> None:
        self.now += seconds
        inc = self.current
        offsets = self.source[inc.position : inc.position + size]
        inc.position += len(offsets)
        self._track(inc.ledger.add(Records.of("requests", 0, offsets, [b"x"] * len(offsets)), self.now))

    @rule(seconds=st.floats(0, 0.02), drained=st.booleans())
    def poll(self, seconds: float, drained: bool) -> None:
        self.now += seconds
        self._track(self.current.ledger.poll(self.now, drained))

    @precondition(lambda self: self.current.in_flight)
    @rule(data=st.data())
    def score(self, data: st.DataObject) -> None:
        inc = self.current
        seq = data.draw(st.sampled_from(sorted(inc.in_flight)))
        offsets = inc.in_flight.pop(seq)
        dead = {row for row, offset in enumerate(offsets) if kind_of(offset, inc.number) == DEAD_LETTER}
        for release in inc.ledger.scored(seq, dead, f"result-{seq}", self.now):
            assert release.result == f"result-{release.batch.seq}"
            released = release.batch.records.offsets
            inc.released += released
            rows = range(len(released)) if release.send is None else release.send
            assert release.skipped == len(released) - len(rows)
            if inc.failed:
                continue
            sends = 0
            for row in rows:
                kind = kind_of(released[row], inc.number)
                self.queues[kind].append(Sent(released[row], release.batch.seq, inc.number))
                sends += 1
            if sends:
                inc.unlanded[release.batch.seq] = sends

    @precondition(lambda self: self.queues[PREDICTION] or self.queues[DEAD_LETTER])
    @rule(kind=st.sampled_from([PREDICTION, DEAD_LETTER]))
    def land(self, kind: int) -> None:
        if self.queues[kind]:
            self._land(kind)

    @rule()
    def commit(self) -> None:
        offset = self.current.ledger.to_commit()
        if offset is not None:
            assert offset > self.committed or self.current.number > 1
            self.committed = max(self.committed, offset)
            self.current.ledger.committed(offset)
        assert self.current.ledger.to_commit() is None

    @precondition(lambda self: not self.current.failed and (self.queues[PREDICTION] or self.queues[DEAD_LETTER]))
    @rule(kind=st.sampled_from([PREDICTION, DEAD_LETTER]))
    def a_delivery_fails(self, kind: int) -> None:
        """The head send of ``kind`` fails: with a gapless producer nothing after it lands either."""
        if not self.queues[kind]:
            return
        failed = self.queues[kind][0]
        if failed.incarnation == self.current.number:
            self.current.ledger.failed(failed.seq)
            self.current.failed = True
        self.queues[kind].clear()

    @rule()
    def the_worker_halts(self) -> None:
        """A fatal error anywhere in the worker (another partition's failed delivery, a deleted topic): this
        ledger commits nothing more, neither what moved nor a final position."""
        self.current.ledger.halt()
        self.current.halted = True

    @rule(landed=st.tuples(st.integers(0, 10), st.integers(0, 10)))
    def crash_and_restart(self, landed: tuple[int, int]) -> None:
        """kill -9: a prefix of what was queued reaches the log, the rest is lost; restart from the commit."""
        self._crash(landed)

    @rule(landed=st.tuples(st.integers(0, 10), st.integers(0, 10)))
    def revoke_mid_flight(self, landed: tuple[int, int]) -> None:
        """A revocation gives up whatever is in flight; the next owner starts from the commit."""
        inc = self.current
        give_up = inc.ledger.revoke()
        assert give_up.committable == inc.ledger.committable_offset()
        assert inc.ledger.scored(0, set(), "late", self.now) == []  # results after a revocation are ignored
        try:
            inc.ledger.add(Records.of("requests", 0, [10**9], [b"x"]), self.now)
        except LedgerError:
            pass
        else:
            raise AssertionError("a revoked ledger took records")
        self._crash(landed)

    # ---------------------------------------------------------------------------------------- invariants

    @invariant()
    def released_offsets_strictly_increase(self) -> None:
        released = self.current.released
        assert all(a < b for a, b in itertools.pairwise(released))

    @invariant()
    def committable_never_passes_an_undelivered_output_nor_goes_back(self) -> None:
        inc = self.current
        committable = inc.ledger.committable_offset()
        if inc.last_committable is not None:
            assert committable is not None and committable >= inc.last_committable
        inc.last_committable = committable
        if committable is None:
            return
        for queue in self.queues:
            for sent in queue:
                if sent.incarnation == inc.number:
                    assert sent.offset >= committable, (sent, committable)
        assert committable <= (inc.released[-1] + 1 if inc.released else 0)

    @invariant()
    def each_log_is_in_offset_order_for_requests_whose_outcome_is_stable(self) -> None:
        """A request whose outcome changed kind across a restart, and whose first answer was lost, is answered
        by the next incarnation after later ones in the other log: order holds among the stable."""
        for log in self.logs:
            stable = [o for o in log if is_stable(o)]
            assert all(a < b for a, b in itertools.pairwise(stable)), log

    @invariant()
    def a_halted_ledger_commits_nothing(self) -> None:
        ledger = self.current.ledger
        if self.current.halted:
            assert ledger.to_commit() is None and ledger.final_commit() is None
        else:
            assert ledger.final_commit() == ledger.committable_offset()

    @invariant()
    def stalled_for_is_zero_exactly_when_idle(self) -> None:
        ledger = self.current.ledger
        assert (ledger.stalled_for(self.now + 1.0) == 0.0) == ledger.idle

    # ---------------------------------------------------------------------------------------- the end

    def teardown(self) -> None:
        """Run to completion without faults: every source offset answered exactly once, of its kind."""
        if self.current.failed or self.current.halted:
            self._crash((0, 0))
        for _ in range(10_000):
            inc = self.current
            if inc.position < len(self.source):
                self.consume(8, 0.0)
            elif inc.in_flight:
                self.score_all()
            elif self.queues[PREDICTION] or self.queues[DEAD_LETTER]:
                for kind in (PREDICTION, DEAD_LETTER):
                    while self.queues[kind]:
                        self._land(kind)
            elif not inc.ledger.idle:
                self._track(inc.ledger.flush(self.now))
            else:
                break
        answered = self.logs[PREDICTION] + self.logs[DEAD_LETTER]
        assert sorted(answered) == self.source, (self.logs, self.source)  # each exactly once, in either log
        for kind in (PREDICTION, DEAD_LETTER):
            expected = [o for o in self.source if is_stable(o) and kind_of(o, 1) == kind]
            assert [o for o in self.logs[kind] if is_stable(o)] == expected, (kind, self.logs[kind], expected)
        assert self.current.ledger.committable_offset() in (None, self.source[-1] + 1 if self.source else None)

    def score_all(self) -> None:
        for seq in sorted(self.current.in_flight, reverse=True):  # out of order on purpose
            offsets = self.current.in_flight.pop(seq)
            number = self.current.number
            dead = {row for row, offset in enumerate(offsets) if kind_of(offset, number) == DEAD_LETTER}
            for release in self.current.ledger.scored(seq, dead, "r", self.now):
                released = release.batch.records.offsets
                rows = range(len(released)) if release.send is None else release.send
                for row in rows:
                    sent = Sent(released[row], release.batch.seq, self.current.number)
                    self.queues[kind_of(released[row], number)].append(sent)
                if rows:
                    self.current.unlanded[release.batch.seq] = len(rows)


TestLedger = LedgerMachine.TestCase
