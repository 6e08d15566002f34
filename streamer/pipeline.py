"""The shell of the data path, shared by both engines: it waits and moves batches between the engine, the
core and the output sink. It decides nothing: every decision about a partition is its ``PartitionLedger``'s.

One event loop, one ledger per assigned partition (created on assignment after the read-back, dropped on
revocation). The engine hands in consumed ``Records`` (``add``) and says whether its consumer is drained; the
ledgers close batches (full, due, or drained); closed batches wait for the dispatcher, which scores everything
due at one moment as one job on the thread pool (ONNX Runtime releases the GIL; one thread hop per tick, not
per partition); each ledger turns its scored batches into releases in offset order; each release becomes
output records (``core.output_records``) and goes to the sink, which reports the batch's delivery once; the engine
commits what ``commits()`` says, which is each ledger's committable offset.

Bounded memory: ``add`` waits while more than ``max_inflight * max_size`` rows wait for scoring or while the sink
has a backlog (the producer's queue is full), so the engine stops pulling from Kafka instead of growing.

Failure: any exception escaping a callback of this module, a failed delivery or a fatal producer error sets
``failure`` (a ``FatalError``) once and halts every ledger (from then on they give nothing to commit); the
engine exits with its code and the next owner recovers by read-back.
Nothing here can wedge a partition silently: every callback is guarded, and the watchdog service reads
``stalled()`` from its own thread -- a partition holding work without progress past the bound stops the worker
even if this loop itself is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any

from streamer.core.batching import BatchPolicy
from streamer.core.errors import FatalError, OutputError
from streamer.core.intake import lag
from streamer.core.ledger import Batch, PartitionLedger, ReadBack, Release
from streamer.core.output_records import output_records
from streamer.core.scoring import ScoredBatch
from streamer.core.stages import Observations, StageSamples
from streamer.core.types import Records
from streamer.observers import FanOut, PipelineObserver
from streamer.pipeline_ports import OutputSink, PipelineTopics, Recover, ScoreFn, score_job

log = logging.getLogger(__name__)


class ScoringPipeline:
    def __init__(
        self,
        *,
        topics: PipelineTopics,
        policy: BatchPolicy,
        score: ScoreFn,
        sink: OutputSink,
        recover: Recover,
        executor: Executor | None,
        max_inflight: int,
        max_dead_letter_bytes: int,
        observer: PipelineObserver | FanOut | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], float] = lambda: time.time() * 1000.0,
        lag_interval_s: float = 5.0,
    ) -> None:
        self.topics = topics
        self._policy = policy
        self._score = score
        self._sink = sink
        self._recover = recover
        self._executor = executor
        self._max_dead_letter_bytes = max_dead_letter_bytes
        self._observer: Any = observer if isinstance(observer, FanOut) else FanOut(*([observer] if observer else []))
        self._clock = clock
        self._wall_ms = wall_clock_ms
        self._lag_interval_s = lag_interval_s
        self._ledgers: dict[int, PartitionLedger[ScoredBatch]] = {}
        self._stages = StageSamples()  # one sampled request per batch, timed stage by stage (core.stages)
        self._recovering: dict[int, asyncio.Future[None]] = {}
        self._slots = asyncio.Semaphore(max_inflight)
        self._inflight = 0
        self._queued: list[tuple[PartitionLedger[ScoredBatch], Batch]] = []
        self._queued_rows = 0
        self._max_queued_rows = max_inflight * policy.max_size
        self._dispatch = asyncio.Event()
        self._room = asyncio.Event()
        self._progress = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()
        self.failure: FatalError | None = None
        self._failed = asyncio.Event()
        # Set by the engine: the partition's high watermark as its Kafka client last saw it (None: unknown).
        self.highwater: Callable[[int], int | None] | None = None

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if not self._tasks:
            for name, coroutine in (
                ("streamer-batch-deadlines", self._run_timer()),
                ("streamer-batch-dispatcher", self._run_dispatcher()),
                ("streamer-lag", self._report_lag()),
            ):
                task = self._loop.create_task(coroutine, name=name)
                task.add_done_callback(self._task_ended)
                self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fail(task.exception())  # type: ignore[arg-type]

    async def stop(self) -> dict[int, int]:
        """Finish everything handed in so far; returns the final commit positions."""
        final = await self.revoke(list(self._ledgers))
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        return final

    @property
    def assigned(self) -> list[int]:
        return sorted(self._ledgers)

    def has_room(self) -> bool:
        """Whether ``add`` would take more without waiting (engines that can pause their consumer ask)."""
        return self._queued_rows < self._max_queued_rows and self._sink.has_room()

    def fail(self, error: BaseException) -> None:
        """Stop for good: the first fatal error wins; the engine exits with its code."""
        if self.failure is not None:
            return
        if not isinstance(error, FatalError):
            log.error("unexpected error in the data path", exc_info=error)
            error = OutputError(f"unexpected error in the data path: {error!r}")
        self.failure = error
        for ledger in self._ledgers.values():
            ledger.halt()  # nothing more is committed: the ledgers decide it from here on
        log.info("data path halted: nothing more is committed")  # the worker says why as it exits (CRITICAL)
        self._failed.set()
        self._progress.set()
        self._room.set()

    async def wait_failed(self) -> FatalError:
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    def stalled(self, now: float) -> list[tuple[int, float]]:
        """(partition, seconds) of every ledger holding work; any thread may ask (the watchdog does)."""
        return [(ledger.partition, ledger.stalled_for(now)) for ledger in list(self._ledgers.values())]

    # ----------------------------------------------------------------------------------------- rebalance

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take ownership: read back the outputs of the new partitions, then accept their records."""
        new = sorted(set(partitions) - set(self._ledgers))
        if not new:
            return
        waiting: asyncio.Future[None] = self._loop.create_future()
        for p in new:
            self._recovering[p] = waiting
        try:
            started = time.monotonic()
            found = await self._loop.run_in_executor(None, self._recover, new)
            for p in new:
                ledger = self._ledgers[p] = PartitionLedger(p, self._policy, found.get(p, ReadBack()))
                if self.failure is not None:
                    ledger.halt()
            log.info(
                "assigned partitions %s of %s; read back outputs in %.3f s: %s",
                new,
                self.topics.requests,
                time.monotonic() - started,
                {p: found.get(p, ReadBack()).describe() for p in new},
            )
            if not waiting.done():
                waiting.set_result(None)
        except BaseException as exc:
            if not waiting.done():
                waiting.set_exception(exc)
            raise
        finally:
            for p in new:
                self._recovering.pop(p, None)

    async def revoke(self, partitions: Iterable[int]) -> dict[int, int]:
        """Give up partitions after finishing what was handed in (scored, delivered); returns their final
        commit positions, for the engine to commit before the partitions go."""
        ledgers = [self._ledgers[p] for p in partitions if p in self._ledgers]
        now = self._clock()
        for ledger in ledgers:
            self._submit(ledger, ledger.flush(now))
        while self.failure is None and not all(ledger.idle for ledger in ledgers):
            self._progress.clear()
            await self._progress.wait()
        final = {}
        for ledger in ledgers:
            offset = ledger.final_commit()
            if offset is not None:
                final[ledger.partition] = offset
            ledger.revoke()
            self._ledgers.pop(ledger.partition, None)
            self._stages.forget(ledger.partition)
        if ledgers:
            gone = [ledger.partition for ledger in ledgers]
            self._observer.on_partitions_gone(gone)
            log.info("revoked partitions %s of %s", gone, self.topics.requests)
        return final

    def lose(self, partitions: Iterable[int]) -> None:
        """Partitions lost without a chance to finish (session expired): drop them, commit nothing."""
        gone = []
        for p in partitions:
            ledger = self._ledgers.pop(p, None)
            self._stages.forget(p)
            if ledger is not None:
                gone.append(p)
                give_up = ledger.revoke()
                log.warning("lost partition %s of %s: gave up %s", p, self.topics.requests, give_up)
        if gone:
            self._observer.on_partitions_gone(gone)

    def commits(self) -> dict[int, int]:
        """Commit positions that moved since ``committed`` was last told (what the engine should commit)."""
        due = {}
        for p, ledger in list(self._ledgers.items()):
            offset = ledger.to_commit()
            if offset is not None:
                due[p] = offset
        return due

    def committed(self, offsets: dict[int, int]) -> None:
        now = self._clock()
        for p, offset in offsets.items():
            ledger = self._ledgers.get(p)
            if ledger is not None:
                ledger.committed(offset)
            self._observe(self._stages.committed(p, offset, now))

    # ----------------------------------------------------------------------------------------- intake

    async def add(self, chunk: Sequence[Records], drained: bool = False, consumed_at: float | None = None) -> None:
        """Hand in consumed records (each of one partition, each partition's in offset order). ``drained``:
        the consumer has nothing more buffered, so open batches close now instead of waiting for batch-mates.
        ``consumed_at``: when the engine got them from its consumer (this pipeline's clock; default now): the
        ledgers count a batch's wait from it, hand-over included."""
        if self.failure is not None:
            raise self.failure
        now = self._clock()
        at = now if consumed_at is None else min(consumed_at, now)
        opened = False
        for records in chunk:
            ledger = self._ledgers.get(records.partition)
            if ledger is None:
                waiting = self._recovering.get(records.partition)
                if waiting is None:
                    log.debug(
                        "dropping records of unassigned partition %s from %s", records.partition, records.offsets[0]
                    )
                    continue
                await asyncio.shield(waiting)  # a cancelled intake must not cancel the read-back's future
                ledger = self._ledgers[records.partition]
            was_open = ledger.next_deadline() is not None
            self._submit(ledger, ledger.add(records, at))
            opened = opened or (not was_open and ledger.next_deadline() is not None)
        if drained:
            for ledger in list(self._ledgers.values()):
                self._submit(ledger, ledger.poll(now, drained=True))
        elif opened:
            self._wake.set()
        while not self.has_room() and self.failure is None:  # backpressure: stop taking records until there is room
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout=0.005)

    async def _run_timer(self) -> None:
        """Close batches at their deadline; sleeps until the earliest one, or until a batch opens."""
        while True:
            deadlines = [d for ledger in self._ledgers.values() if (d := ledger.next_deadline()) is not None]
            self._wake.clear()
            if deadlines:
                delay = min(deadlines) - self._clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
            else:
                await self._wake.wait()
            now = self._clock()
            for ledger in list(self._ledgers.values()):
                self._submit(ledger, ledger.poll(now))

    async def _report_lag(self) -> None:
        """Consumer lag per partition (``core.intake.lag``), every ``lag_interval_s``."""
        while True:
            await asyncio.sleep(self._lag_interval_s)
            if self.highwater is None:
                continue
            for ledger in list(self._ledgers.values()):
                behind = lag(self.highwater(ledger.partition), ledger.last_consumed)
                if behind is not None:
                    self._observer.on_lag(ledger.partition, behind)

    # ----------------------------------------------------------------------------------------- scoring

    def _submit(self, ledger: PartitionLedger[ScoredBatch], batches: list[Batch]) -> None:
        for batch in batches:
            self._queued.append((ledger, batch))
            self._queued_rows += len(batch.records)
            self._observe(self._stages.batched(batch, self._clock(), self._wall_ms()))
        if batches:
            self._dispatch.set()

    def _observe(self, observations: Observations) -> None:
        for stage, seconds in observations:
            self._observer.on_stage(stage, seconds)

    async def _run_dispatcher(self) -> None:
        """Score queued batches, all partitions' at once, at most ``max_inflight`` jobs at a time.

        The ledgers decide *when* a partition's rows are due; this decides *how* they run. At low rates each
        partition closes a batch of one or two rows per tick, and a thread-pool round trip per such batch would
        cost more than scoring it: what is due goes as one job, one hop per tick whatever the partition count.
        """
        while True:
            await self._dispatch.wait()
            self._dispatch.clear()
            while self._queued:
                await self._slots.acquire()
                job, self._queued = self._queued, []
                self._queued_rows -= sum(len(batch.records) for _, batch in job)
                self._room.set()
                self._inflight += 1
                self._observer.on_inflight(self._inflight)
                if self._executor is None:  # scoring on the loop: no thread hop (the work holds the GIL anyway)
                    done: asyncio.Future[Any] = self._loop.create_future()
                    done.set_result(score_job(self._score, [b.records for _, b in job]))
                    self._guarded(self._scored, job, done)
                    await asyncio.sleep(0)  # let deliveries and intake in between jobs
                    continue
                future = self._loop.run_in_executor(self._executor, score_job, self._score, [b.records for _, b in job])
                future.add_done_callback(partial(self._guarded, self._scored, job))

    def _guarded(self, callback: Callable[..., None], *args: Any) -> None:
        """Every callback runs through here: an exception stops the worker instead of wedging a partition."""
        try:
            callback(*args)
        except BaseException as exc:
            self.fail(exc)

    def _scored(self, job: list[tuple[PartitionLedger[ScoredBatch], Batch]], future: asyncio.Future[Any]) -> None:
        self._slots.release()
        self._inflight -= 1
        self._observer.on_inflight(self._inflight)
        scored_batches, scoring_s = future.result()
        self._observer.on_scored([batch for _, batch in job], scored_batches, scoring_s)
        now = self._clock()
        touched = {}
        for (ledger, batch), scored in zip(job, scored_batches, strict=True):
            self._observe(self._stages.reached(ledger.partition, batch.seq, "scored", now))
            for release in ledger.scored(batch.seq, scored.errors, scored, now):
                self._send(ledger, release)
            touched[ledger.partition] = ledger
        for ledger in touched.values():
            self._observer.on_depth(ledger.partition, ledger.depth)
        self._progress.set()

    # ----------------------------------------------------------------------------------------- output

    def _send(self, ledger: PartitionLedger[ScoredBatch], release: Release[ScoredBatch]) -> None:
        if release.skipped:
            self._observer.on_skipped(ledger.partition, release.skipped)
        seq = release.batch.seq
        if not release.has_output:
            self._stages.drop(ledger.partition, seq)
            return  # everything was already in the log: the ledger counted it delivered
        out = output_records(release.result, release.send, self._wall_ms(), self._max_dead_letter_bytes)
        self._observer.on_released(release, out)
        self._observe(self._stages.reached(ledger.partition, seq, "produced", self._clock()))
        self._sink.send(out, partial(self._guarded, self._delivered, ledger, seq))

    def _delivered(self, ledger: PartitionLedger[ScoredBatch], seq: int, error: BaseException | None) -> None:
        if error is not None:
            ledger.failed(seq)
            self.fail(error)
            return
        now = self._clock()
        ledger.delivered(seq, now)
        self._observe(self._stages.delivered(ledger.partition, seq, now))
        self._progress.set()
