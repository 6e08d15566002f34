"""The pipeline shell with a fake output sink, a controllable executor and a fake clock: no broker, milliseconds.

What is checked is the shell's part of the contract: outputs leave per partition in offset order whatever
order scoring finishes in; the engine is told to commit only what was delivered; the read-back skip rule is
applied; a failed delivery, a full producer queue, an exception in a callback or in scoring never wedge a
partition silently.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
import pytest

from streamer.core.batching import BatchPolicy
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import OutputError
from streamer.core.ledger import ReadBack
from streamer.core.output_records import OutputRecords
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records
from streamer.pipeline import ScoringPipeline
from streamer.pipeline_ports import PipelineTopics

CARD = ModelCard("m", 1, "regression", ("a",), "x", "0" * 64, OutputRef("y"), None)
CATALOG = Catalog({"m": {1: CARD}})
TOPICS = PipelineTopics("req", "pred", "dlq")
SMALL_BATCHES = BatchPolicy(2, 60.0)


def infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x[:, 0] * 2}


def score(records: Records):
    return score_records(records, CATALOG, infer)


class HeldExecutor(Executor):
    """Runs a job only when the test says so (``run(i)``), so that jobs can finish in any order."""

    def __init__(self, hold: bool = True) -> None:
        self.hold = hold
        self.jobs: list[tuple[Future, Callable[..., Any], tuple]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        if self.hold:
            self.jobs.append((future, fn, args))
        else:
            future.set_result(fn(*args))
        return future

    def run(self, index: int) -> None:
        future, fn, args = self.jobs.pop(index)
        future.set_result(fn(*args))


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[OutputRecords, Callable[[BaseException | None], None]]] = []
        self.room = True

    def send(self, out: OutputRecords, on_done: Callable[[BaseException | None], None]) -> None:
        self.sent.append((out, on_done))

    def has_room(self) -> bool:
        return self.room

    def deliver_all(self, error: BaseException | None = None) -> None:
        for _, on_done in self.sent:
            on_done(error)

    def predictions(self) -> list[tuple[int, int]]:
        """(partition, source offset) of every prediction sent, in order."""
        return [
            (out.partition, json.loads(value)["source"]["offset"])
            for out, _ in self.sent
            for value in out.predictions.values
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(partition: int, offsets: list[int], values: list[bytes] | None = None) -> Records:
    values = values or [json.dumps({"features": {"a": o}}).encode() for o in offsets]
    return Records.of("req", partition, offsets, values, keys=[b"k%d" % o for o in offsets])


async def make(
    *,
    executor: Executor | None = None,
    sink: FakeSink | None = None,
    recovered: dict[int, ReadBack] | None = None,
    policy: BatchPolicy = SMALL_BATCHES,
    observer: Any = None,
    scorer: Callable = score,
    max_dead_letter_bytes: int = 1 << 20,
) -> tuple[ScoringPipeline, FakeSink, Clock]:
    sink = sink or FakeSink()
    clock = Clock()
    pipeline = ScoringPipeline(
        topics=TOPICS,
        policy=policy,
        score=scorer,
        sink=sink,
        recover=lambda partitions: dict(recovered or {}),
        executor=executor or HeldExecutor(hold=False),
        max_inflight=4,
        max_dead_letter_bytes=max_dead_letter_bytes,
        observer=observer,
        clock=clock,
        wall_clock_ms=lambda: 5000.0,
    )
    pipeline.start()
    await pipeline.assign([0, 1])
    return pipeline, sink, clock


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_outputs_leave_in_offset_order_whatever_order_scoring_finishes_in() -> None:
    async def scenario() -> None:
        executor = HeldExecutor()
        pipeline, sink, _ = await make(executor=executor, policy=BatchPolicy(2, 60.0))
        for chunk in ([0, 1], [2, 3], [4, 5]):
            await pipeline.add([records(0, chunk)])
            await settle()
        assert len(executor.jobs) == 3
        executor.run(2)
        executor.run(1)
        await settle()
        assert sink.sent == []  # batches 2 and 3 wait for batch 1
        executor.run(0)
        await settle()
        assert sink.predictions() == [(0, o) for o in range(6)]
        sink.deliver_all()
        assert await pipeline.stop() == {0: 6}

    asyncio.run(scenario())


def test_the_engine_commits_only_what_was_delivered_in_order() -> None:
    async def scenario() -> None:
        pipeline, sink, _ = await make()
        await pipeline.add([records(0, [10, 11]), records(1, [7, 8])])
        await pipeline.add([records(0, [12, 13])])
        await settle()
        assert len(sink.sent) == 3 and pipeline.commits() == {}
        sink.sent[2][1](None)  # partition 0's second batch: delivered before the first one
        await settle()
        assert pipeline.commits() == {}
        sink.sent[0][1](None)
        sink.sent[1][1](None)
        await settle()
        assert pipeline.commits() == {0: 14, 1: 9}
        pipeline.committed({0: 14, 1: 9})
        assert pipeline.commits() == {}
        await pipeline.stop()

    asyncio.run(scenario())


def test_without_a_committed_position_rows_already_in_the_log_are_skipped_by_kind() -> None:
    async def scenario() -> None:
        recovered = {0: ReadBack(prediction=3, dead_letter=1)}
        observer = Recorder()
        pipeline, sink, _ = await make(recovered=recovered, policy=BatchPolicy(10, 60.0), observer=observer)
        values = [b"bad" if o in (1, 2) else json.dumps({"features": {"a": o}}).encode() for o in range(6)]
        await pipeline.add([records(0, list(range(6)), values)], drained=True)
        await settle()
        [(out, on_done)] = sink.sent
        assert [json.loads(v)["source"]["offset"] for v in out.predictions.values] == [4, 5]
        assert [dict(h)["streamer-source-offset"] for h in out.dead_letters.headers] == [b"2"]
        assert observer.calls["on_skipped"] == [(0, 3)]
        on_done(None)
        await settle()
        assert pipeline.commits() == {0: 6}
        await pipeline.stop()

    asyncio.run(scenario())


def test_listed_rows_are_skipped_whatever_they_resolve_to_now() -> None:
    """From the committed position on, the read-back lists every answered offset: offset 2 was answered as a
    prediction before the restart and is a dead letter now -- still skipped; offset 1 was a dead letter that
    never landed while later predictions did -- answered now, although it is below the predictions watermark."""

    async def scenario() -> None:
        recovered = {0: ReadBack(prediction=3, dead_letter=-1, answered=frozenset({0, 2, 3}), exact_above=-1)}
        pipeline, sink, _ = await make(recovered=recovered, policy=BatchPolicy(10, 60.0))
        values = [b"bad" if o == 2 else json.dumps({"features": {"a": o}}).encode() for o in range(6)]
        await pipeline.add([records(0, list(range(6)), values)], drained=True)
        await settle()
        [(out, on_done)] = sink.sent
        assert [json.loads(v)["source"]["offset"] for v in out.predictions.values] == [1, 4, 5]
        assert out.dead_letters.values == []
        on_done(None)
        await settle()
        assert pipeline.commits() == {0: 6}
        await pipeline.stop()

    asyncio.run(scenario())


def test_a_batch_whose_rows_were_all_answered_before_is_committable_at_once() -> None:
    async def scenario() -> None:
        pipeline, sink, _ = await make(recovered={0: ReadBack(prediction=9, dead_letter=9)})
        await pipeline.add([records(0, [8, 9])])
        await settle()
        assert sink.sent == [] and pipeline.commits() == {0: 10}
        await pipeline.stop()

    asyncio.run(scenario())


def test_a_failed_delivery_stops_the_worker_and_commits_nothing_more() -> None:
    async def scenario() -> None:
        pipeline, sink, _ = await make()
        await pipeline.add([records(0, [0, 1]), records(0, [2, 3])])
        await settle()
        sink.sent[1][1](None)
        sink.sent[0][1](OutputError("broker said no"))
        await settle()
        assert isinstance(pipeline.failure, OutputError) and pipeline.failure.exit_code == 3
        assert pipeline.commits() == {}
        with pytest.raises(OutputError):
            await pipeline.add([records(0, [4])])

    asyncio.run(scenario())


def test_after_a_fatal_error_no_partition_commits_anything_more_nor_at_revocation() -> None:
    """The ledgers decide it (halted), not the engine: partition 1's delivered batch is not committed once
    partition 0's delivery failed, neither by the periodic commit nor as a final position."""

    async def scenario() -> None:
        pipeline, sink, _ = await make()
        await pipeline.add([records(1, [0, 1])])
        await settle()
        sink.sent[0][1](None)
        assert pipeline.commits() == {1: 2}
        await pipeline.add([records(0, [0, 1])])
        await settle()
        sink.sent[1][1](OutputError("broker said no"))
        assert pipeline.failure is not None
        assert pipeline.commits() == {}
        assert await pipeline.revoke([0, 1]) == {}

    asyncio.run(scenario())


def test_an_exception_in_a_callback_stops_the_worker_instead_of_wedging_a_partition() -> None:
    class Exploding:
        def on_released(self, release: Any, out: Any) -> None:
            raise RuntimeError("a bug in an observer")

    async def scenario() -> None:
        pipeline, _sink, _ = await make(observer=Exploding())
        await pipeline.add([records(0, [0, 1])])
        await settle()
        assert pipeline.failure is not None and "a bug in an observer" in str(pipeline.failure)
        assert pipeline.failure.exit_code == 3

    asyncio.run(scenario())


def test_a_scoring_job_that_raises_becomes_scoring_failed_dead_letters() -> None:
    def broken(records: Records):
        raise ZeroDivisionError("oops")

    async def scenario() -> None:
        pipeline, sink, _ = await make(scorer=broken)
        await pipeline.add([records(0, [0, 1])])
        await settle()
        [(out, on_done)] = sink.sent
        assert len(out.predictions) == 0 and len(out.dead_letters) == 2
        assert dict(out.dead_letters.headers[0])["streamer-error"] == b"scoring-failed"
        on_done(None)
        await settle()
        assert pipeline.failure is None and pipeline.commits() == {0: 2}
        await pipeline.stop()

    asyncio.run(scenario())


def test_a_full_sink_holds_the_engine_back_until_there_is_room() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        pipeline, _, _ = await make(sink=sink)
        sink.room = False
        adding = asyncio.get_running_loop().create_task(pipeline.add([records(0, [0, 1])]))
        await asyncio.sleep(0.02)
        assert not adding.done() and not pipeline.has_room()
        sink.room = True
        await asyncio.wait_for(adding, 1.0)
        sink.deliver_all()
        await pipeline.stop()

    asyncio.run(scenario())


def test_a_drained_consumer_closes_open_batches_at_once_and_the_deadline_closes_the_rest() -> None:
    async def scenario() -> None:
        pipeline, sink, clock = await make(policy=BatchPolicy(100, 0.002))
        await pipeline.add([records(0, [0]), records(1, [0])], drained=True)
        await settle()
        assert len(sink.sent) == 2  # no waiting for batch-mates that are not coming
        await pipeline.add([records(0, [1])], drained=False)
        await settle()
        assert len(sink.sent) == 2
        clock.now += 0.002  # the deadline passes (the timer sleeps in real time, 2 ms)
        await asyncio.sleep(0.02)
        assert len(sink.sent) == 3
        sink.deliver_all()
        await pipeline.stop()

    asyncio.run(scenario())


def test_a_partition_holding_work_reports_how_long_it_has_not_moved() -> None:
    async def scenario() -> None:
        pipeline, sink, clock = await make()
        await pipeline.add([records(0, [0, 1])])
        await settle()
        assert dict(pipeline.stalled(clock.now + 30.0))[0] == pytest.approx(30.0)
        assert dict(pipeline.stalled(clock.now + 30.0))[1] == 0.0  # partition 1 holds nothing
        sink.deliver_all()
        await settle()
        assert dict(pipeline.stalled(clock.now + 30.0))[0] == 0.0

    asyncio.run(scenario())


def test_revoke_finishes_what_it_holds_and_returns_the_final_commit() -> None:
    async def scenario() -> None:
        pipeline, sink, _ = await make(policy=BatchPolicy(10, 60.0))
        await pipeline.add([records(0, [5, 6, 7])])  # open: not full, not drained
        revoking = asyncio.get_running_loop().create_task(pipeline.revoke([0]))
        await settle()
        assert not revoking.done() and len(sink.sent) == 1  # flushed and sent, waiting for delivery
        sink.deliver_all()
        assert await asyncio.wait_for(revoking, 1.0) == {0: 8}
        assert pipeline.assigned == [1]
        await pipeline.stop()

    asyncio.run(scenario())


def test_a_dead_letter_over_the_topic_limit_is_cut_and_says_so() -> None:
    async def scenario() -> None:
        pipeline, sink, _ = await make(max_dead_letter_bytes=2000)
        await pipeline.add([records(0, [0], [b"{" * 10_000])], drained=True)
        await settle()
        [(out, _)] = sink.sent
        headers = dict(out.dead_letters.headers[0])
        assert headers["streamer-error"] == b"invalid-json" and headers["streamer-original-size"] == b"10000"
        assert len(out.dead_letters.values[0]) < 2000 and out.cut == 1
        assert out.dead_letters.keys == [b"k0"]  # the key is never cut
        sink.deliver_all()
        await pipeline.stop()

    asyncio.run(scenario())


class Recorder:
    def __init__(self) -> None:
        self.calls: dict[str, list[tuple]] = {}

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if hook.startswith("__"):
            raise AttributeError(hook)
        return lambda *args: self.calls.setdefault(hook, []).append(args)


def test_each_batch_s_first_row_is_timed_through_every_stage_in_order() -> None:
    """One sample per batch, stamped by the shell at each stage with its own clock: consumed (from the record's
    timestamp; the fake wall clock reads 5,000 ms), batched, scored, produced, delivered, committed."""

    async def scenario() -> None:
        recorder = Recorder()
        pipeline, sink, clock = await make(observer=recorder, executor=HeldExecutor(hold=False))
        chunk = Records.of("req", 0, [0, 1, 2], [json.dumps({"features": {"a": 1}}).encode()] * 3, [b"k"] * 3)
        chunk.timestamps_ms[:] = [4_000, 4_001, 4_002]
        clock.now = 101.0
        await pipeline.add([chunk], consumed_at=100.5)  # two batches of two rows: [0, 1] and [2]
        await settle()
        clock.now = 102.0
        await pipeline.add([], drained=True)
        await settle()
        stages = [stage for stage, _ in recorder.calls["on_stage"]]
        assert stages.count("consumed") == stages.count("batched") == 2
        assert stages.count("produced") == 2 and "delivered" not in stages
        clock.now = 103.0
        sink.deliver_all()
        pipeline.committed(pipeline.commits())
        timings = recorder.calls["on_stage"]
        first = next(seconds for stage, seconds in timings if stage == "consumed")
        # the clocks read 101.0 and 5,000 ms together: consumed at 100.5 is 4,500 ms, 500 ms after its timestamp
        assert first == pytest.approx(0.5)
        assert [stage for stage, _ in timings].count("committed") == 2
        assert all(seconds >= 0 for _, seconds in timings)

    asyncio.run(scenario())


def test_an_intake_cancelled_while_its_partition_is_read_back_leaves_the_assignment_whole() -> None:
    """Found from outside: SIGTERM during Faust's partition assignment cancelled the agent waiting for a partition
    being read back, which cancelled the assignment's future; completing it then raised InvalidStateError and
    crashed the worker (exit 1)."""

    async def scenario() -> None:
        release = threading.Event()

        def recover(partitions: list[int]) -> dict[int, ReadBack]:
            release.wait(10)
            return {}

        pipeline = ScoringPipeline(
            topics=TOPICS,
            policy=SMALL_BATCHES,
            score=score,
            sink=FakeSink(),
            recover=recover,
            executor=HeldExecutor(hold=False),
            max_inflight=4,
            max_dead_letter_bytes=1 << 20,
        )
        pipeline.start()
        loop = asyncio.get_running_loop()
        assigning = loop.create_task(pipeline.assign([2]))
        await settle()
        adding = loop.create_task(pipeline.add([records(2, [0, 1])]))
        await settle()
        adding.cancel()  # the engine stopping while the partition is read back
        await settle()
        release.set()
        await asyncio.wait_for(assigning, 10)  # completes: no InvalidStateError
        assert adding.cancelled() and pipeline.assigned == [2]
        await pipeline.stop()

    asyncio.run(scenario())


def test_revoked_and_lost_partitions_are_told_to_the_observers() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        pipeline, _, _ = await make(observer=recorder)
        await pipeline.revoke([0])
        pipeline.lose([1, 5])  # 5 was never assigned
        assert recorder.calls["on_partitions_gone"] == [([0],), ([1],)]
        await pipeline.stop()

    asyncio.run(scenario())
