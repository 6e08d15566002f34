"""How an engine takes records from its consumer: every intake decision of both engines lives in this file.

Both engines -- Faust's ``take_events`` and librdkafka's ``consume`` -- hand the pipeline one chunk of consumed
records at a time and say with it whether the consumer is *drained*; between chunks they may change the fetch
wait. Values in, values out; nothing here reads a clock or a client.

- **chunk** (``IntakePolicy.chunk``): at most this many records per hand-over: eight batches' worth, at least
  2,000. A hand-over has a fixed price (a thread round trip in the batch engine, an agent wake-up in Faust), so
  under a backlog one carries many batches; under light load a chunk is whatever came, and the size bounds
  nothing but memory.
- **hand-over wait** (``IntakePolicy.handover_wait_s``): how long one consume waits for a full chunk before it
  hands over what it has: the batch's ``max_wait_s``, capped at 5 ms, at least 1 ms. The ledgers do the batching
  (a batch closes at its own deadline, counted from its first row), so a longer wait here would only add to
  every request's latency; under 1 ms the loop would spin. A client whose bulk call waits out its timeout
  unless the chunk fills (librdkafka's ``consume``) waits for a full chunk only while the last verdict was
  *behind*; otherwise it hands over at the first record, with what is buffered behind it (``engines.confluent``).
- **gathering under a backlog** (``IntakePolicy.gather``): an engine whose hand-over is cheap only in bulk may
  keep what it consumed and consume again while the verdict says behind, up to a chunk and at most
  ``BACKLOG_GATHER_S``, then hand it all over at once. Faust's ``take_events`` returns what came within the
  hand-over wait -- under a backlog a few dozen events, while the scoring it triggers keeps the same single thread
  from consuming meanwhile -- so each partition's batch closed at its deadline with ~11 rows and the fixed price
  of a batch (a scoring call, its bookkeeping, a delivery report) was paid every 11 rows. Gathered, a partition's
  batch fills towards ``max_size``. Only behind: records already waiting in the broker wait here instead, and a
  chunk that is not behind is handed over at once, so light load never waits for it.
- **lag** (``lag``): per partition, the high watermark the client last saw minus the next offset to consume,
  never negative; unknown (None) while the client has no high watermark. On the embedded broker the high
  watermark is the last record batch's base offset + 1 (measured), so the lag there is short by at most one
  producer batch and zero when caught up, which is what the decisions below need.
- **drained** (``IntakePolicy.judge``): every partition in the chunk is caught up -- fewer than a full batch
  (``batch_size``) of records between it and its high watermark; a partition whose high watermark the client
  does not know yet counts as caught up when the chunk came back short (the client had nothing more buffered
  within the wait). Then no full batch is known to be coming, so open batches close at once instead of waiting
  out ``max_wait_s`` for a few batch-mates; when a full batch or more is waiting (a backlog) batches fill to
  ``max_size``. A short chunk alone does not say drained where the lag is known: a broker that answers each
  short fetch with a few records (the embedded one under a backlog, at a 5 ms fetch wait) would otherwise cut
  every batch small exactly when batching pays. The threshold was a lag of 0 before: at light load a client's
  high watermark runs ahead of what it has handed over (aiokafka's counts records fetched into Faust's buffers,
  the next chunk's), so the Faust engine's batches waited out ``max_wait_s`` for one or two rows (measured: a
  mean batch wait of 1.8 ms at 500/s and 5.2 ms at 2,000/s, the batch engine's 0.4 and 0.8 ms); and a
  transaction marker after a partition's last record, which keeps its lag at 1, held its batches the same way.
- **behind**: not drained, and the chunk came back full or its partitions' lag adds up to a chunk or more.
- **fetch wait** (``FetchWait``): ``idle_ms`` normally, ``backlog_ms`` after ``raise_after`` chunks behind in a
  row, back to ``idle_ms`` at the first chunk that is not behind. A broker may answer a fetch only when its wait
  is over even when data is there (the embedded one does, measured), so a short wait buys latency and costs
  throughput. The two clients differ here, and only here: aiokafka (the Faust engine) reads the wait for every
  fetch request it builds, so that engine follows the decision (``adjusts_fetch_wait``); librdkafka reads
  ``fetch.wait.max.ms`` once, when its consumer is created, and changing it means a new consumer -- a
  rebalance -- so the batch engine keeps ``idle_ms`` and ``judge`` says no fetch wait for it.

Invariants (``tests/property/test_intake.py``): lag is never negative and is the records between the position
and the high watermark; a chunk is drained exactly when every partition's lag is below ``batch_size``, or
unknown in a short chunk; drained and behind exclude each other; gathering goes on only behind, below a chunk
and within ``BACKLOG_GATHER_S``; a chunk holds at least one full batch; the hand-over wait stays within
[1 ms, 5 ms] and never exceeds a batch's wait above 1 ms; the fetch wait is ``backlog_ms`` exactly after
``raise_after`` chunks behind in a row, and always ``idle_ms`` for a client that cannot change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_CHUNK = 2000
CHUNK_BATCHES = 8
MAX_HANDOVER_WAIT_S = 0.005
MIN_HANDOVER_WAIT_S = 0.001
BACKLOG_GATHER_S = 0.05


def lag(highwater: int | None, last_consumed: int | None) -> int | None:
    """Records of the partition not consumed yet, as the client last saw its end; None when unknown.

    ``highwater`` is the offset the next produced record will get (a client reports a negative value or None
    before its first fetch); ``last_consumed`` the offset of the last record handed over (None: none yet)."""
    if highwater is None or highwater < 0 or last_consumed is None:
        return None
    return max(highwater - last_consumed - 1, 0)


@dataclass(frozen=True, slots=True)
class ChunkVerdict:
    """What one consumed chunk says: close open batches now (``drained``), and the fetch wait wanted next
    (milliseconds; None where the client's wait cannot change)."""

    drained: bool
    behind: bool
    fetch_wait_ms: int | None


class FetchWait:
    """The fetch wait of the next fetches: ``idle_ms``, or ``backlog_ms`` after ``raise_after`` chunks behind in
    a row (the counter is the only state; ``update`` is called once per chunk)."""

    __slots__ = ("_behind", "backlog_ms", "idle_ms", "raise_after")

    def __init__(self, idle_ms: int, backlog_ms: int, raise_after: int = 2) -> None:
        self.idle_ms, self.backlog_ms, self.raise_after = idle_ms, backlog_ms, raise_after
        self._behind = 0

    def update(self, behind: bool) -> int:
        self._behind = self._behind + 1 if behind else 0
        return self.backlog_ms if self._behind >= self.raise_after else self.idle_ms


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    chunk: int
    batch_size: int  # a full batch (``BatchPolicy.max_size``): a lag below it is caught up
    handover_wait_s: float
    fetch_idle_ms: int
    fetch_backlog_ms: int
    adjusts_fetch_wait: bool

    @classmethod
    def of(
        cls,
        batch_max_size: int,
        batch_max_wait_s: float,
        fetch_wait_max_ms: int,
        fetch_wait_backlog_ms: int,
        *,
        adjusts_fetch_wait: bool,
    ) -> IntakePolicy:
        """The policy for batches of ``batch_max_size`` rows closing within ``batch_max_wait_s``.
        ``adjusts_fetch_wait``: whether the engine's client can change its fetch wait while it runs."""
        return cls(
            chunk=max(batch_max_size * CHUNK_BATCHES, MIN_CHUNK),
            batch_size=batch_max_size,
            handover_wait_s=min(max(batch_max_wait_s, MIN_HANDOVER_WAIT_S), MAX_HANDOVER_WAIT_S),
            fetch_idle_ms=fetch_wait_max_ms,
            fetch_backlog_ms=fetch_wait_backlog_ms if adjusts_fetch_wait else fetch_wait_max_ms,
            adjusts_fetch_wait=adjusts_fetch_wait,
        )

    def fetch_wait(self) -> FetchWait:
        """The fetch-wait state of one consumer (one per engine run)."""
        return FetchWait(self.fetch_idle_ms, self.fetch_backlog_ms)

    def judge(self, consumed: int, lags: Sequence[int | None], fetch_wait: FetchWait) -> ChunkVerdict:
        """The verdict on a chunk of ``consumed`` records whose partitions have ``lags`` (one per partition of
        the chunk, ``lag()`` of each); advances ``fetch_wait``."""
        full = consumed >= self.chunk
        drained = all(known < self.batch_size if known is not None else not full for known in lags)
        behind = not drained and (full or sum(known or 0 for known in lags) >= self.chunk)
        wanted = fetch_wait.update(behind)
        return ChunkVerdict(drained, behind, wanted if self.adjusts_fetch_wait else None)

    def gather(self, verdict: ChunkVerdict, held: int, held_for_s: float) -> bool:
        """Whether to keep the ``held`` records consumed over the last ``held_for_s`` and consume more before
        handing them over (only while behind, below a chunk, within ``BACKLOG_GATHER_S``)."""
        return verdict.behind and held < self.chunk and held_for_s < BACKLOG_GATHER_S
