"""The scoring pipeline shared by both engines: per-partition batching, scoring in threads, reordering,
keyed emit to the request's partition, acknowledgement after delivery, and read-back recovery.

An engine (the Faust agent, or the batch consume loop) only hands consumed messages to ``add_many`` together
with an opaque acknowledgement token, and tells the pipeline about assignment and revocation. Everything
else happens here, the same way for both engines:

- per assigned partition one ``Batcher`` and one ``ReorderBuffer``, created on assignment, dropped on
  revocation; a timer task closes batches at their deadline (``Batcher.next_deadline``);
- closed batches are scored on a thread pool (``core.scoring.score_batch``; ONNX Runtime releases the GIL)
  while the loop keeps consuming; the batches of all partitions that are due at the same moment go as one job;
  at most ``max_inflight`` jobs run and at most ``max_inflight * max_size`` rows wait, beyond which
  ``add_many`` waits (backpressure: the engine stops pulling from Kafka instead of growing memory);
- results leave per partition in request-offset order, keyed byte for byte like the request, to the same
  partition number of the predictions or dead-letter topic;
- a request is acknowledged to the engine only when its output is delivered (or was already in the log);
- on assignment, ``recover`` reads back the output partitions; requests whose output is already there are
  acknowledged without being written again. That is what makes the output exactly-once across ``kill -9``,
  restart and rebalance on any broker, transactions or not.

A delivery failure (after the producer's own retries) is fatal: the pipeline stops accepting work and
``failure`` is set; the engine exits non-zero and the next owner of the partition recovers by read-back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError

from streamer.adapters.kafka_output import OutputError, OutputProducer, source_headers
from streamer.core.batching import Batcher, BatchPolicy
from streamer.core.envelope import dead_letter_headers, encode_body
from streamer.core.errors import SCORING_FAILED, DecodeError
from streamer.core.reorder import ReorderBuffer
from streamer.core.scoring import Outcome, Request

log = logging.getLogger(__name__)

Recover = Callable[[list[int]], dict[tuple[str, int], int]]
ScoreFn = Callable[[Sequence[Request]], list[Outcome]]


@dataclass(slots=True)
class Consumed:
    """One consumed request message and the engine's token to acknowledge it with."""

    request: Request
    key: bytes | None
    headers: list[tuple[str, bytes]]
    token: Any


class PipelineObserver(Protocol):
    """Metrics hooks (``adapters.metrics``); the pipeline calls them and never touches a metric itself."""

    def on_batch(self, partition: int, size: int, wait_s: float, scoring_s: float) -> None: ...
    def on_outcomes(self, outcomes: list[Outcome], latencies_ms: list[float]) -> None: ...
    def on_skipped(self, partition: int, count: int) -> None: ...
    def on_reorder_depth(self, partition: int, depth: int) -> None: ...
    def on_inflight(self, batches: int) -> None: ...
    def on_lag(self, partition: int, messages: int) -> None: ...


class NullObserver:
    def on_batch(self, partition: int, size: int, wait_s: float, scoring_s: float) -> None:
        pass

    def on_outcomes(self, outcomes: list[Outcome], latencies_ms: list[float]) -> None:
        pass

    def on_skipped(self, partition: int, count: int) -> None:
        pass

    def on_reorder_depth(self, partition: int, depth: int) -> None:
        pass

    def on_inflight(self, batches: int) -> None:
        pass

    def on_lag(self, partition: int, messages: int) -> None:
        pass


class FanOut:
    """Several observers as one (metrics, prediction log): each hook calls every observer that has it."""

    def __init__(self, *observers: object) -> None:
        self._observers = observers

    def __getattr__(self, hook: str) -> Callable[..., None]:
        targets = [getattr(o, hook) for o in self._observers if hasattr(o, hook)]

        def call(*args: Any) -> None:
            for target in targets:
                target(*args)

        setattr(self, hook, call)  # built once per hook: hooks run per batch on the loop
        return call


@dataclass(slots=True, eq=False)
class _Partition:
    number: int
    batcher: Batcher[Consumed]
    reorder: ReorderBuffer[tuple[Outcome, Consumed]] = field(default_factory=ReorderBuffer)
    # Highest source offset whose prediction / dead letter is already in the log (read back at assignment).
    emitted_prediction: int = -1
    emitted_dead_letter: int = -1
    batch_opened_at: float = 0.0
    last_consumed: int = -1
    inflight_batches: int = 0
    # Released requests in offset order, [token, delivered]: acknowledged strictly in this order, so that an
    # engine may commit "everything below the last acknowledged offset" (a request whose output was already in
    # the log is done at once, but must not be acknowledged before an earlier one still being delivered).
    acks: deque[list[Any]] = field(default_factory=deque)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def update_idle(self) -> None:
        if self.inflight_batches == 0 and not self.acks and len(self.batcher) == 0:
            self.idle.set()
        else:
            self.idle.clear()


class ScoringPipeline:
    def __init__(
        self,
        *,
        requests_topic: str,
        predictions_topic: str,
        dlq_topic: str,
        policy: BatchPolicy,
        score: ScoreFn,
        producer: OutputProducer,
        recover: Recover,
        ack: Callable[[Any], None],
        executor: Executor,
        max_inflight: int,
        observer: PipelineObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], float] = lambda: time.time() * 1000.0,
    ) -> None:
        self.requests_topic = requests_topic
        self.predictions_topic = predictions_topic
        self.dlq_topic = dlq_topic
        self._policy = policy
        self._score = score
        self._producer = producer
        self._recover = recover
        self._ack = ack
        self._executor = executor
        self._observer: PipelineObserver = observer or NullObserver()
        self._clock = clock
        self._wall_ms = wall_clock_ms
        self._partitions: dict[int, _Partition] = {}
        self._recovering: dict[int, asyncio.Future[None]] = {}
        self._slots = asyncio.Semaphore(max_inflight)
        self._inflight = 0
        self._queued: list[tuple[_Partition, list[Consumed], float]] = []
        self._queued_rows = 0
        self._max_queued_rows = max_inflight * policy.max_size
        self._dispatch = asyncio.Event()
        self._room = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._reports: deque[tuple[_Partition, list[Any], KafkaError | None]] = deque()
        self._reports_scheduled = False
        # Set by the engine: the partition's high watermark as its Kafka client last saw it (None: unknown).
        self.highwater: Callable[[int], int | None] | None = None
        self._lag_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._timer is None:
            self._timer = self._loop.create_task(self._run_timer(), name="streamer-batch-deadlines")
            self._dispatcher = self._loop.create_task(self._run_dispatcher(), name="streamer-batch-dispatcher")
            self._lag_task = self._loop.create_task(self._report_lag(), name="streamer-lag")

    async def stop(self) -> None:
        """Finish everything handed in so far (flush batchers, wait for scoring and delivery)."""
        await self.revoke(list(self._partitions))
        for task in (self._timer, self._dispatcher, self._lag_task):
            if task is not None:
                task.cancel()
        self._timer = self._dispatcher = self._lag_task = None

    @property
    def assigned(self) -> list[int]:
        return sorted(self._partitions)

    def has_room(self) -> bool:
        """Whether ``add_many`` would take more without waiting (engines that can pause their consumer ask)."""
        return self._queued_rows < self._max_queued_rows

    async def wait_failed(self) -> BaseException:
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    # ----------------------------------------------------------------------------------------- rebalance

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take ownership: read back the outputs of the new partitions, then accept their messages."""
        new = sorted(set(partitions) - set(self._partitions))
        if not new:
            return
        waiting: asyncio.Future[None] = self._loop.create_future()
        for p in new:
            self._recovering[p] = waiting
        try:
            started = time.monotonic()
            emitted = await self._loop.run_in_executor(None, self._recover, new)
            for p in new:
                state = _Partition(p, Batcher(self._policy))
                state.emitted_prediction = emitted.get((self.predictions_topic, p), -1)
                state.emitted_dead_letter = emitted.get((self.dlq_topic, p), -1)
                state.update_idle()
                self._partitions[p] = state
            log.info(
                "assigned partitions %s of %s; read back outputs in %.3f s: %s",
                new,
                self.requests_topic,
                time.monotonic() - started,
                {p: (self._partitions[p].emitted_prediction, self._partitions[p].emitted_dead_letter) for p in new},
            )
            waiting.set_result(None)
        except BaseException as exc:
            waiting.set_exception(exc)
            raise
        finally:
            for p in new:
                self._recovering.pop(p, None)

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Give up partitions: what was handed in is scored, delivered and acknowledged first."""
        states = [self._partitions[p] for p in partitions if p in self._partitions]
        for state in states:
            batch = state.batcher.flush()
            if batch:
                self._submit(state, batch)
        for state in states:
            state.update_idle()
            idle = self._loop.create_task(state.idle.wait())
            failed = self._loop.create_task(self._failed.wait())
            await asyncio.wait({idle, failed}, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            failed.cancel()
            self._partitions.pop(state.number, None)
        if states:
            log.info("revoked partitions %s of %s", [s.number for s in states], self.requests_topic)

    # ----------------------------------------------------------------------------------------- intake

    async def add_many(self, consumed: Sequence[Consumed]) -> None:
        """Hand in consumed messages (any partitions, each partition in offset order)."""
        if self.failure is not None:
            raise self.failure
        now = self._clock()
        for item in consumed:
            partition = item.request.source.partition
            state = self._partitions.get(partition)
            if state is None:
                waiting = self._recovering.get(partition)
                if waiting is None:
                    log.debug(
                        "dropping a message of unassigned partition %s offset %s", partition, item.request.source.offset
                    )
                    continue
                await waiting
                state = self._partitions[partition]
            opened = len(state.batcher) == 0
            state.reorder.expect(item.request.source.offset)
            state.last_consumed = item.request.source.offset
            batch = state.batcher.add(item, now)
            if opened:
                state.batch_opened_at = now
                self._wake.set()
            state.idle.clear()
            if batch is not None:
                self._submit(state, batch)
        while self._queued_rows >= self._max_queued_rows:  # backpressure: stop taking messages until scored
            self._room.clear()
            await self._room.wait()

    async def _run_timer(self) -> None:
        """Close batches at their deadline; sleeps until the earliest one, or until a batch opens."""
        while True:
            deadlines = [d for s in self._partitions.values() if (d := s.batcher.next_deadline()) is not None]
            self._wake.clear()
            if deadlines:
                delay = min(deadlines) - self._clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
            else:
                await self._wake.wait()
            now = self._clock()
            for state in list(self._partitions.values()):
                batch = state.batcher.poll(now)
                if batch is not None:
                    self._submit(state, batch)

    async def _report_lag(self, interval_s: float = 5.0) -> None:
        """Consumer lag per partition: high watermark minus the next offset to consume. On the embedded broker
        the high watermark is the last batch's base offset + 1 (measured), so lag there is approximate."""
        while True:
            await asyncio.sleep(interval_s)
            if self.highwater is None:
                continue
            for state in list(self._partitions.values()):
                high = self.highwater(state.number)
                if high is not None and high >= 0 and state.last_consumed >= 0:
                    self._observer.on_lag(state.number, max(high - state.last_consumed - 1, 0))

    # ----------------------------------------------------------------------------------------- scoring

    def _submit(self, state: _Partition, batch: list[Consumed]) -> None:
        """Queue a closed batch for the dispatcher; batches closed at the same moment are scored together."""
        state.inflight_batches += 1
        self._queued.append((state, batch, self._clock() - state.batch_opened_at))
        self._queued_rows += len(batch)
        self._dispatch.set()

    async def _run_dispatcher(self) -> None:
        """Score queued batches, all partitions' at once, at most ``max_inflight`` jobs at a time.

        Per-partition batchers decide *when* a partition's rows are due; this decides *how* they run. At low
        rates each partition closes a batch of one or two rows per deadline, and a thread-pool round trip per
        such batch would cost more than scoring it: merging what is due into one job keeps one ONNX call and
        one hop per tick, whatever the partition count.
        """
        while True:
            await self._dispatch.wait()
            self._dispatch.clear()
            while self._queued:
                await self._slots.acquire()
                jobs, self._queued = self._queued, []
                self._queued_rows -= sum(len(batch) for _, batch, _ in jobs)
                self._room.set()
                self._inflight += 1
                self._observer.on_inflight(self._inflight)
                requests = [c.request for _, batch, _ in jobs for c in batch]
                future = self._loop.run_in_executor(self._executor, self._score_safely, requests)
                future.add_done_callback(lambda f, jobs=jobs: self._scored(jobs, f))

    def _score_safely(self, requests: list[Request]) -> tuple[list[Outcome], float]:
        started = time.perf_counter()
        try:
            outcomes = self._score(requests)
        except Exception as exc:  # a bug must not kill the worker on this input: dead-letter the batch
            log.exception("scoring a batch of %s failed unexpectedly", len(requests))
            detail = f"internal error: {exc!r}"
            outcomes = [Outcome(r.source, error=DecodeError(SCORING_FAILED, detail)) for r in requests]
        return outcomes, time.perf_counter() - started

    def _scored(self, jobs: list[tuple[_Partition, list[Consumed], float]], future: asyncio.Future) -> None:
        self._slots.release()
        self._inflight -= 1
        self._observer.on_inflight(self._inflight)
        outcomes, scoring_s = future.result()
        start = 0
        for state, batch, wait_s in jobs:
            state.inflight_batches -= 1
            self._observer.on_batch(state.number, len(batch), wait_s, scoring_s)
            mine = outcomes[start : start + len(batch)]
            start += len(batch)
            if self._partitions.get(state.number) is not state:
                state.update_idle()
                continue  # revoked meanwhile and already given up: the next owner re-reads these
            for item, outcome in zip(batch, mine, strict=True):
                state.reorder.push(item.request.source.offset, (outcome, item))
            self._emit(state, state.reorder.pop_ready())
            self._observer.on_reorder_depth(state.number, len(state.reorder))

    # ----------------------------------------------------------------------------------------- output

    def _emit(self, state: _Partition, ready: list[tuple[int, tuple[Outcome, Consumed]]]) -> None:
        skipped = 0
        now_ms = self._wall_ms()
        emitted: list[Outcome] = []
        latencies: list[float] = []
        for offset, (outcome, item) in ready:
            source = item.request.source
            entry = [item.token, False]
            state.acks.append(entry)
            if outcome.body is not None:
                if offset <= state.emitted_prediction:
                    skipped += 1
                    entry[1] = True
                    continue
                latency_ms = round(now_ms - item.request.timestamp_ms, 3)
                outcome.body["latency_ms"] = latency_ms
                latencies.append(latency_ms)
                topic, value = self.predictions_topic, encode_body(outcome.body)
                headers = source_headers(source.topic, source.partition, source.offset)
            else:
                assert outcome.error is not None
                if offset <= state.emitted_dead_letter:
                    skipped += 1
                    entry[1] = True
                    continue
                topic, value = self.dlq_topic, item.request.value
                headers = item.headers + dead_letter_headers(outcome.error, source)
            emitted.append(outcome)
            self._producer.send(
                topic, state.number, item.key, value, headers, partial(self._delivery_report, state, entry)
            )
        if emitted:
            self._observer.on_outcomes(emitted, latencies)
        if skipped:
            self._observer.on_skipped(state.number, skipped)
        self._release_acks(state)

    def _release_acks(self, state: _Partition) -> None:
        acks = state.acks
        while acks and acks[0][1]:
            self._ack(acks.popleft()[0])
        state.update_idle()

    def _delivery_report(self, state: _Partition, entry: list[Any], error: KafkaError | None, _message: Any) -> None:
        """Producer thread. Reports are queued and handed to the loop in bulk: one wake-up per burst of
        deliveries instead of one per message (each wake-up is a write to the loop's self-pipe)."""
        self._reports.append((state, entry, error))
        if not self._reports_scheduled:
            self._reports_scheduled = True
            self._loop.call_soon_threadsafe(self._on_delivered)

    def _on_delivered(self) -> None:
        self._reports_scheduled = False  # before draining: a report appended from now on schedules another drain
        touched: set[_Partition] = set()
        reports = self._reports
        while reports:
            state, entry, error = reports.popleft()
            if error is not None:
                if self.failure is None:
                    self.failure = OutputError(f"cannot deliver an output of partition {state.number}: {error}")
                    log.error("%s; stopping: the next owner recovers by read-back", self.failure)
                    self._failed.set()
                continue  # never acknowledged: neither it nor anything after it in this partition is committed
            entry[1] = True
            touched.add(state)
        for state in touched:
            self._release_acks(state)
