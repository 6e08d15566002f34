"""The shell both engines share: what a worker hands an engine, and everything an engine does besides consuming.

An engine (``faust.py``: Faust's agent on aiokafka; ``confluent.py``: a librdkafka consume loop) only consumes,
converts what it consumed to ``Records`` (its client's adapter: ``adapters.faust_consumer``,
``adapters.kafka_consumer``) and calls into this shell, which owns the rest, once for both:

- **the pipeline and its failure watcher** (``Shell.start``): built on the engine's running loop; the first
  fatal error of the data path stops the worker with its exit code (``WorkerContext.fatal``);
- **intake** (``Shell.judge``): per consumed chunk, drained or not and the fetch wait wanted next, decided by
  ``core.intake.IntakePolicy`` from the partitions' lag;
- **the garbage collector** (``engines.collector.settle``): settled once, after the first assignment was read
  back, so that a full collection never walks what the worker keeps for good;
- **readiness** (``Readiness``): ``/ready`` is 503 ``starting`` until the first assignment was read back,
  200 with the partitions after, 503 ``failed`` for good after a fatal error -- one body for both engines'
  HTTP servers;
- **faults that do not clear** (``Shell.subscribed``, ``assign``, ``revoke``, ``fetched``, and the engines'
  ``context.faults.seen``): from its subscription, and from the start of every rebalance, the consumer must be
  assigned within ``kafka.error_timeout_s``, and assigned partitions behind their end must fetch; the fault
  watch (``services.kafka_faults``) stops the worker with exit 7 and the cause when that does not happen;
- **the commit path** (``Shell.commit_moved``, ``Shell.revoke``, ``Shell.stop``), step by step:

  1. the ledgers say what may be committed (``ScoringPipeline.commits``: positions that moved; nothing after
     a fatal error -- the ledger decides, ``PartitionLedger.halt``);
  2. the engine's ``commit`` callable commits them with its own client: Faust's consumer on the event loop,
     librdkafka's on the consume thread (the only thread that may touch that consumer: the ``*_from_thread``
     variants run step 1 on the loop and step 2 on the calling thread);
  3. only after a commit that succeeded are the ledgers told (``ScoringPipeline.committed``); a failed commit
     is logged, not fatal -- the next owner re-reads from the last commit and de-duplicates by read-back.

  Partitions that go (revocation, shutdown) are first finished -- every batch handed in scored and its
  outputs delivered -- and then committed at their final positions: revoke, then commit, never the other way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from streamer.adapters.kafka_producer import KafkaOutputSink
from streamer.adapters.prometheus_metrics import CONTENT_TYPE, WorkerMetrics
from streamer.config import Settings
from streamer.core.errors import FatalError, StreamerError, exit_code_of
from streamer.core.intake import ChunkVerdict, IntakePolicy, lag
from streamer.core.kafka_faults import AUTHORIZATION, GROUP_PROTOCOL, NOT_JOINED, TOPIC_MISSING
from streamer.core.types import Records
from streamer.engines import collector
from streamer.engines.loop_lag import watch_loop_lag
from streamer.pipeline import ScoringPipeline
from streamer.services.kafka_faults import FaultWatch
from streamer.services.runner import FatalHook, Stoppable

log = logging.getLogger(__name__)

T = TypeVar("T")
Highwater = Callable[[int], int | None]  # partition -> high watermark as the client last saw it (None: unknown)
AsyncCommit = Callable[[dict[int, int]], Awaitable[bool]]  # partition -> next offset; True once committed
SyncCommit = Callable[[dict[int, int]], bool]
OnLoop = Callable[[Coroutine[Any, Any, T]], T]  # run a coroutine on the engine's loop from another thread, wait

HEALTH_BODY = {"status": "ok"}


@dataclass(slots=True)
class Readiness:
    """What ``/ready`` says: ready once partitions were assigned (and read back), never again after a fatal
    error."""

    assigned: bool = False
    fatal: str | None = None
    partitions: Callable[[], list[int]] = list
    worker: str = ""  # the worker's id (``WorkerSettings.worker_id()``), in every answer

    def answer(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body)."""
        if self.fatal is not None:
            return 503, {"status": "failed", "worker": self.worker}
        if not self.assigned:
            return 503, {"status": "starting", "worker": self.worker}
        return 200, {"status": "ready", "worker": self.worker, "partitions": self.partitions()}


@dataclass(slots=True)
class WorkerContext:
    """Everything an engine needs, wired (``app.py``): it only consumes, hands records to the shell, commits."""

    settings: Settings
    bootstrap: str
    port: int
    metrics: WorkerMetrics
    sink: KafkaOutputSink
    readiness: Readiness
    make_pipeline: Callable[[], ScoringPipeline]
    metrics_content_type: str = CONTENT_TYPE
    started: list[Stoppable] = field(default_factory=list)
    faults: FaultWatch | None = None  # the worker's (app.py); None in tests of the shell alone

    @property
    def group(self) -> str:
        """The subject of group faults."""
        return f"group {self.settings.worker.group_id}"

    def intake(self, *, adjusts_fetch_wait: bool) -> IntakePolicy:
        """The intake policy of the settings, for an engine whose client can (or cannot) change its fetch wait
        while it runs."""
        worker, kafka = self.settings.worker, self.settings.kafka
        return IntakePolicy.of(
            worker.batch_max_size,
            worker.batch_max_wait_ms / 1000.0,
            kafka.fetch_wait_max_ms,
            kafka.fetch_wait_backlog_ms,
            adjusts_fetch_wait=adjusts_fetch_wait,
        )

    def fatal(self, error: BaseException) -> NoReturn:
        """Stop hard, saying why in one CRITICAL line: nothing more is acknowledged; the next owner of the
        partitions reads back the outputs."""
        log.critical("fatal (exit %s): %s", exit_code_of(error), error)
        exit_now(self.readiness, error)


def exit_now(readiness: Readiness, error: BaseException) -> NoReturn:
    """``/ready`` 503 for good, then the exit with the error's code (``core.errors.exit_code_of``), at once: a
    worker that cannot go on does not wait for anything (the caller has said why). Any thread may call it."""
    readiness.fatal = str(error)
    logging.shutdown()
    os._exit(exit_code_of(error))


def service_stopped(readiness: Readiness) -> FatalHook:
    """The worker's hook for a background service that stopped on an error no retry can fix (refused credentials,
    a missing permission): the service said it in one CRITICAL line; the worker exits with 2, an operator error,
    instead of going on without labels, evaluation or the control channel."""

    def stopped(_name: str, error: StreamerError) -> None:
        exit_now(readiness, error)

    return stopped


class Shell:
    """One engine run: its pipeline, failure watcher, intake decisions and commit path."""

    def __init__(self, context: WorkerContext, intake: IntakePolicy, highwater: Highwater) -> None:
        self.context = context
        self.intake = intake
        self._fetch_wait = intake.fetch_wait()
        self._highwater = highwater
        self._pipeline: ScoringPipeline | None = None
        self._tasks: list[asyncio.Task[Any]] = []  # held here: the loop keeps only weak references to tasks

    @property
    def pipeline(self) -> ScoringPipeline:
        if self._pipeline is None:
            raise RuntimeError("the engine shell has not started")
        return self._pipeline

    @property
    def started(self) -> bool:
        return self._pipeline is not None

    def start(self) -> ScoringPipeline:
        """Build and start the pipeline on the running loop, and watch it for a fatal error."""
        if self._pipeline is not None:
            return self._pipeline
        pipeline = self._pipeline = self.context.make_pipeline()
        pipeline.highwater = self._highwater
        pipeline.start()
        self.context.readiness.partitions = lambda: pipeline.assigned
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(pipeline.wait_failed(), name="streamer-failure")
        watcher.add_done_callback(lambda done: None if done.cancelled() else self.context.fatal(done.result()))
        self._tasks.append(watcher)
        self._tasks.append(loop.create_task(watch_loop_lag(self.context.metrics.on_loop_lag), name="streamer-loop-lag"))
        return pipeline

    # ------------------------------------------------------------------------------------------ intake

    def judge(self, chunk: list[Records], consumed: int, highwater: Highwater | None = None) -> ChunkVerdict:
        """The verdict on a chunk of ``consumed`` records (``chunk``: one ``Records`` per partition), from each
        partition's lag as ``highwater`` (default: the shell's) says; call it from one thread only."""
        high = highwater or self._highwater
        lags = [lag(high(records.partition), records.offsets[-1]) for records in chunk]
        return self.intake.judge(consumed, lags, self._fetch_wait)

    async def add(self, chunk: list[Records], drained: bool, consumed_at: float | None = None) -> None:
        """Hand a consumed chunk to the pipeline (``consumed_at``: when the engine got it, the pipeline's clock).
        After a fatal error the worker is exiting -- the failure watcher says why, in its one line -- so the engine
        waits for that instead of failing on its own (a traceback)."""
        try:
            await self.pipeline.add(chunk, drained=drained, consumed_at=consumed_at)
        except FatalError:
            await asyncio.Event().wait()

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take partitions (read back first); the worker is ready once the first assignment is taken."""
        partitions = list(partitions)
        self.joined(bool(partitions))
        await self.pipeline.assign(partitions)
        if not self.context.readiness.assigned:
            frozen = collector.settle()  # what the worker keeps for good is never scanned again
            log.info("garbage collector settled: %s objects frozen", frozen)
        self.context.readiness.assigned = True

    # ------------------------------------------------------------------------------------------ faults

    def subscribed(self) -> None:
        """The consumer subscribed: it must be assigned within the bound (the fault watch starts here)."""
        faults = self.context.faults
        if faults is not None:
            faults.seen(NOT_JOINED, self.context.group, "joining the group")
            faults.start()

    def rebalancing(self) -> None:
        """A rebalance began (partitions revoked or lost): the consumer must be assigned again within the bound."""
        if self.context.faults is not None:
            self.context.faults.seen(NOT_JOINED, self.context.group, "rebalancing")

    def joined(self, with_partitions: bool) -> None:
        """An assignment (any thread): the group works; with partitions, the topic is there and readable."""
        faults = self.context.faults
        if faults is not None:
            faults.clear(NOT_JOINED, GROUP_PROTOCOL, AUTHORIZATION, subject=self.context.group)
            if with_partitions:
                faults.clear(TOPIC_MISSING, AUTHORIZATION)

    def fetched(self, positions: dict[int, tuple[int | None, int | None]], wanting: bool) -> None:
        """Positions and ends (the last stable offset) of the assigned partitions; any thread."""
        if self.context.faults is not None:
            self.context.faults.fetched(self.context.settings.topics.requests, positions, wanting)

    def stopping(self) -> None:
        """A clean stop began: a rebalance or a slow drain from here on is no fault."""
        if self.context.faults is not None:
            self.context.faults.stop()

    # ------------------------------------------------------------------------------------------ commits

    async def commit_moved(self, commit: AsyncCommit) -> None:
        """Steps 1-3 on the loop: commit the positions that moved."""
        due = self.pipeline.commits()
        if due and await commit(due):
            self.pipeline.committed(due)

    def commit_every(self, commit: AsyncCommit, interval_s: float) -> None:
        """Commit what moved every ``interval_s``, on the loop, for as long as the loop runs."""

        async def every() -> None:
            while True:
                await asyncio.sleep(interval_s)
                await self.commit_moved(commit)

        self._tasks.append(asyncio.get_running_loop().create_task(every(), name="streamer-commit"))

    async def revoke(self, partitions: Iterable[int], commit: AsyncCommit) -> None:
        """Finish the partitions that go, then commit their final positions."""
        await commit(await self.pipeline.revoke(list(partitions)))

    async def stop(self, commit: AsyncCommit, timeout_s: float) -> None:
        """Finish everything held (within ``timeout_s``, else abandon it: the next owner re-reads and
        de-duplicates), then commit the final positions."""
        try:
            final = await asyncio.wait_for(self.pipeline.stop(), timeout=timeout_s)
        except TimeoutError:
            log.warning("in-flight batches abandoned at shutdown; their requests will be re-read and de-duplicated")
            return
        await commit(final)

    def commit_moved_from_thread(self, on_loop: OnLoop[Any], commit: SyncCommit) -> None:
        """Steps 1-3 for a client owned by the calling thread: the ledgers are asked and told on the loop."""
        due = on_loop(_call(self.pipeline.commits))
        if due and commit(due):
            on_loop(_call(self.pipeline.committed, due))

    def revoke_from_thread(self, on_loop: OnLoop[Any], partitions: Iterable[int], commit: SyncCommit) -> None:
        commit(on_loop(self.pipeline.revoke(list(partitions))))

    def stop_from_thread(self, on_loop: OnLoop[Any], commit: SyncCommit) -> None:
        commit(on_loop(self.pipeline.stop()))


async def _call(function: Callable[..., T], *args: Any) -> T:
    """A plain function run on the loop (ledger state is the loop's: other threads never touch it)."""
    return function(*args)


def run_on_loop(loop: asyncio.AbstractEventLoop) -> OnLoop[Any]:
    """``OnLoop`` for ``loop``: submit a coroutine from another thread and wait for its result."""

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    return run


def lose(on_loop: OnLoop[Any], pipeline: ScoringPipeline, partitions: list[int]) -> None:
    """Partitions lost without a chance to finish (session expired): dropped, nothing committed."""
    on_loop(_call(pipeline.lose, partitions))


def fail(on_loop: OnLoop[Any], pipeline: ScoringPipeline, error: BaseException) -> None:
    on_loop(_call(pipeline.fail, error))
