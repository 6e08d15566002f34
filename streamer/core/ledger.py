"""The partition ledger: every decision about one assigned partition of the request topic.

Every decision about which consumed offsets form which batch, which results may leave and in what order,
which are skipped because the read-back found their output already in the log, which offset may be committed
after which deliveries, and what a revocation gives up lives in this file. The shell (``pipeline.py`` and the
engines) only moves records in, scored results and delivery reports back, and commits what
``committable_offset()`` says. Values in, values out; time enters as ``now`` (seconds, any monotonic origin).

Life of a batch::

    add/poll --> Batch --(shell scores it)--> scored() --> Release --(shell sends it)--> delivered()
                  open      in flight           waiting in order      undelivered         done

Invariants (``tests/property/test_ledger.py`` drives a ``RuleBasedStateMachine`` against a naive model):

1. Consumed offsets strictly increase (``add`` raises otherwise); gaps are allowed (transaction markers).
2. Batches partition the consumed offsets: each consumed offset is in exactly one batch, batches are
   consecutive runs in offset order, none holds more than ``max_size`` rows (``Batcher``).
3. Results are released in batch order whatever order scoring finishes in: released offsets strictly
   increase, and each consumed offset is released exactly once -- or given up, once, by ``revoke``.
4. Read-back skip rule: a released row is not sent again when an output of it is already in the log. Above
   the read-back's exact floor (the committed position, from which a new owner re-reads) the read-back lists
   every source offset found in either output log, and a row is skipped exactly when its offset is listed,
   whatever its kind is now: a request whose outcome changed across the restart (a version added or removed,
   a transient scoring failure) is neither answered twice nor lost. At or below the floor (no committed
   position known) the rule falls back to the watermarks: skipped when its offset is at most the highest
   source offset of its own kind's log -- each output partition holds a prefix of what was sent to it, so
   the watermark covers exactly the rows answered, provided the kind is the same as when they were sent.
5. The committable offset is one past the last offset of the longest prefix of released batches whose
   outputs were all delivered (a batch with nothing to send is delivered when released). It never passes
   an undelivered output, never goes backwards, and after a failed delivery never passes the failed batch.
   What is committed is decided here too: ``to_commit()`` (what moved since the last commit) and
   ``final_commit()`` (the position to commit as the partition goes); once the worker has ``halt``-ed on a
   fatal error -- this partition's or any other's -- both are None: nothing more is acknowledged, and the next
   owner re-reads from the last commit and de-duplicates by read-back.
6. ``stalled_for(now)`` is how long the ledger has held work (an open batch, a batch being scored, a result
   waiting for an earlier one, an undelivered release) without any of it moving: the watchdog's input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from streamer.core.batching import Batcher, BatchPolicy
from streamer.core.types import Records

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReadBack:
    """What the read-back found in the output logs for one source partition.

    ``prediction`` / ``dead_letter``: the highest source offset in each log (-1: none). ``answered``: every
    source offset above ``exact_above`` that has an output in either log; ``exact_above`` None means the
    read-back did not list them (no committed position to start from), and the watermarks alone decide.
    """

    prediction: int = -1
    dead_letter: int = -1
    answered: frozenset[int] = frozenset()
    exact_above: int | None = None

    def skips(self, offset: int, dead_letter: bool) -> bool:
        """Whether the row at ``offset``, of the given kind now, already has its output in the log."""
        if self.exact_above is not None and offset > self.exact_above:
            return offset in self.answered
        return offset <= (self.dead_letter if dead_letter else self.prediction)

    @property
    def highest(self) -> int:
        """No offset above this has an output in the log."""
        return max(self.prediction, self.dead_letter)

    def describe(self) -> dict[str, int]:
        """What was found, for the assignment log line."""
        described = {"prediction": self.prediction, "dead_letter": self.dead_letter}
        if self.exact_above is not None:
            described.update(committed=self.exact_above + 1, answered_after_commit=len(self.answered))
        return described


@dataclass(slots=True)
class Batch:
    """A closed batch: consecutive records of one partition, numbered ``seq`` in offset order."""

    partition: int
    seq: int
    records: Records
    opened_at: float
    closed_at: float

    @property
    def wait_s(self) -> float:
        """From its first row's arrival to its close (the batching delay)."""
        return self.closed_at - self.opened_at


@dataclass(slots=True)
class Release(Generic[T]):
    """A scored batch whose turn has come. ``send`` lists the rows to write (None: all of them); the others
    were ``skipped`` by the read-back rule."""

    batch: Batch
    result: T
    send: list[int] | None
    skipped: int

    @property
    def has_output(self) -> bool:
        return self.send is None or bool(self.send)


@dataclass(frozen=True, slots=True)
class GiveUp:
    """What a revocation abandons: rows never batched or never scored, and batches released but not yet
    delivered. The next owner re-reads them from the committed offset and de-duplicates by read-back."""

    unbatched_rows: int
    in_flight_batches: int
    undelivered_batches: int
    committable: int | None


class LedgerError(Exception):
    """The shell broke the ledger's protocol (a bug, never bad input): offsets out of order, a batch scored
    twice, a delivery for a batch that was never released."""


class PartitionLedger(Generic[T]):
    __slots__ = (
        "_batcher",
        "_committable",
        "_committed",
        "_failed",
        "_halted",
        "_in_flight",
        "_last_consumed",
        "_last_progress",
        "_next_release",
        "_next_seq",
        "_revoked",
        "_scored",
        "_undelivered",
        "partition",
        "read_back",
    )

    def __init__(self, partition: int, policy: BatchPolicy, read_back: ReadBack = ReadBack()) -> None:
        self.partition = partition
        self.read_back = read_back
        self._batcher = Batcher(policy)
        self._next_seq = 0
        self._next_release = 0
        self._in_flight: dict[int, Batch] = {}  # closed, not yet scored
        self._scored: dict[int, tuple[Batch, T, Collection[int]]] = {}  # scored, waiting for an earlier batch
        self._undelivered: deque[list] = deque()  # [Batch, delivered] in release order
        self._committable: int | None = None
        self._committed: int | None = None
        self._last_consumed: int | None = None
        self._last_progress: float | None = None  # None: holds no work
        self._failed = False
        self._halted = False
        self._revoked = False

    # ------------------------------------------------------------------------------------------ batching

    def add(self, records: Records, now: float) -> list[Batch]:
        """Take consumed records (offsets above every earlier one); returns the batches that filled up."""
        self._check_open()
        if not records.offsets:
            return []
        if self._last_consumed is not None and records.offsets[0] <= self._last_consumed:
            raise LedgerError(
                f"partition {self.partition}: offset {records.offsets[0]} consumed after {self._last_consumed}"
            )
        self._last_consumed = records.offsets[-1]
        if self._last_progress is None:
            self._last_progress = now
        return self._batches(self._batcher.add(records, now), now)

    def poll(self, now: float, drained: bool = False) -> list[Batch]:
        """Close the open batch at its deadline, or at once when the consumer has nothing more buffered."""
        if self._revoked:
            return []
        closed = self._batcher.poll(now, drained)
        return self._batches([closed], now) if closed is not None else []

    def flush(self, now: float) -> list[Batch]:
        """Close the open batch whatever its age (draining before a revocation or shutdown)."""
        if self._revoked:
            return []
        closed = self._batcher.flush()
        return self._batches([closed], now) if closed is not None else []

    def next_deadline(self) -> float | None:
        return self._batcher.next_deadline()

    def _batches(self, closed: list[Records], now: float) -> list[Batch]:
        batches = []
        for records in closed:
            batch = Batch(self.partition, self._next_seq, records, self._batcher.opened_at, now)
            self._next_seq += 1
            self._in_flight[batch.seq] = batch
            batches.append(batch)
        if batches:
            self._last_progress = now
        return batches

    # ------------------------------------------------------------------------------------------ release

    def scored(self, seq: int, dead_letter_rows: Collection[int], result: T, now: float) -> list[Release[T]]:
        """Hand in the result of batch ``seq``; returns every release now due, in batch order.

        ``dead_letter_rows`` are the rows of the batch that end as dead letters; the others are predictions.
        After a revocation results are ignored (the partition was given up).
        """
        if self._revoked:
            return []
        batch = self._in_flight.pop(seq, None)
        if batch is None:
            raise LedgerError(f"partition {self.partition}: batch {seq} is not being scored")
        self._scored[seq] = (batch, result, dead_letter_rows)
        self._last_progress = now
        releases: list[Release[T]] = []
        while self._next_release in self._scored:
            batch, result, dead = self._scored.pop(self._next_release)
            self._next_release += 1
            release = self._release(batch, result, dead)
            releases.append(release)
            self._undelivered.append([batch, not release.has_output])
        self._advance()
        return releases

    def _release(self, batch: Batch, result: T, dead: Collection[int]) -> Release[T]:
        read_back = self.read_back
        if batch.records.offsets[0] > read_back.highest:
            return Release(batch, result, None, 0)  # the common case: nothing of it can be in the log yet
        skips = read_back.skips
        send = [row for row, offset in enumerate(batch.records.offsets) if not skips(offset, row in dead)]
        return Release(batch, result, send, len(batch.records) - len(send))

    # ------------------------------------------------------------------------------------------ delivery

    def delivered(self, seq: int, now: float) -> None:
        """Every output of released batch ``seq`` is in the log."""
        if self._revoked:
            return
        for entry in self._undelivered:
            if entry[0].seq == seq:
                entry[1] = True
                break
        else:
            raise LedgerError(f"partition {self.partition}: batch {seq} is not awaiting delivery")
        self._last_progress = now
        self._advance()

    def failed(self, seq: int) -> None:
        """An output of batch ``seq`` could not be delivered: nothing from it on may ever be committed."""
        self._failed = True

    def _advance(self) -> None:
        undelivered = self._undelivered
        while undelivered and undelivered[0][1] and not self._failed:
            self._committable = undelivered.popleft()[0].records.offsets[-1] + 1
        if self._idle():
            self._last_progress = None

    def committable_offset(self) -> int | None:
        """The position to commit: one past the last offset whose output (and every earlier one) is
        delivered; None before the first."""
        return self._committable

    def to_commit(self) -> int | None:
        """The committable offset if it moved since ``committed`` was last told; else None (nothing to do, or
        halted)."""
        if self._halted or self._committable is None or self._committable == self._committed:
            return None
        return self._committable

    def final_commit(self) -> int | None:
        """The position to commit as the partition goes (after ``flush`` and the wait for what was in flight):
        the committable offset; None before the first, or once halted."""
        return None if self._halted else self._committable

    def halt(self) -> None:
        """The worker stops on a fatal error: from now on nothing of this partition is committed."""
        self._halted = True

    def committed(self, offset: int) -> None:
        """The shell committed ``offset`` (a value ``to_commit`` returned) to the group."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    # ------------------------------------------------------------------------------------------ state

    @property
    def last_consumed(self) -> int | None:
        return self._last_consumed

    def _idle(self) -> bool:
        return not (len(self._batcher) or self._in_flight or self._scored or self._undelivered)

    @property
    def idle(self) -> bool:
        """Nothing open, in flight, waiting or undelivered: everything consumed is committable."""
        return self._idle()

    @property
    def depth(self) -> int:
        """Rows in flight or finished behind an unfinished batch (the reorder depth), plus the open batch."""
        rows = len(self._batcher)
        rows += sum(len(b.records) for b in self._in_flight.values())
        rows += sum(len(b.records) for b, _, _ in self._scored.values())
        return rows

    def stalled_for(self, now: float) -> float:
        """Seconds the ledger has held work without progress; 0 when it holds none."""
        return 0.0 if self._last_progress is None else max(now - self._last_progress, 0.0)

    def revoke(self) -> GiveUp:
        """Give the partition up now: nothing more is batched, released or committed from this ledger."""
        give_up = GiveUp(
            unbatched_rows=len(self._batcher),
            in_flight_batches=len(self._in_flight) + len(self._scored),
            undelivered_batches=sum(1 for _, done in self._undelivered if not done),
            committable=self._committable,
        )
        self._revoked = True
        self._batcher.flush()
        self._in_flight.clear()
        self._scored.clear()
        self._undelivered.clear()
        self._last_progress = None
        return give_up

    def _check_open(self) -> None:
        if self._revoked:
            raise LedgerError(f"partition {self.partition} was revoked")
