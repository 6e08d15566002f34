"""The shell both engines share (``engines.common``): readiness, intake verdicts and the commit path, against a
stand-in pipeline that records what it was asked. No broker, no socket."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from streamer import config
from streamer.adapters.kafka_producer import KafkaOutputSink
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.core.intake import IntakePolicy
from streamer.core.types import Records
from streamer.engines import collector
from streamer.engines.common import Readiness, Shell, WorkerContext, run_on_loop
from streamer.pipeline import ScoringPipeline


class StandInPipeline:
    """Records the calls; ``due`` is what the ledgers would say may be committed."""

    def __init__(self, due: dict[int, int], final: dict[int, int]) -> None:
        self.due, self.final = due, final
        self.calls: list[tuple[str, Any]] = []
        self.highwater: Any = None
        self.assigned: list[int] = []
        self.stop_takes_s = 0.0

    def start(self) -> None:
        self.calls.append(("start", None))

    async def wait_failed(self) -> None:
        await asyncio.Event().wait()

    def commits(self) -> dict[int, int]:
        self.calls.append(("commits", None))
        return dict(self.due)

    def committed(self, offsets: dict[int, int]) -> None:
        self.calls.append(("committed", offsets))

    async def revoke(self, partitions: list[int]) -> dict[int, int]:
        self.calls.append(("revoke", partitions))
        return {p: o for p, o in self.final.items() if p in partitions}

    async def assign(self, partitions: list[int]) -> None:
        self.calls.append(("assign", list(partitions)))
        self.assigned = list(partitions)

    async def stop(self) -> dict[int, int]:
        await asyncio.sleep(self.stop_takes_s)
        self.calls.append(("stop", None))
        return dict(self.final)


def shell_over(pipeline: StandInPipeline, highwater: dict[int, int | None] | None = None) -> Shell:
    settings = config.load(environ={"STREAMER_MODELS_DIR": "models"})
    context = WorkerContext(
        settings,
        "127.0.0.1:9",
        0,
        WorkerMetrics(),
        cast(KafkaOutputSink, None),  # never touched by the shell
        Readiness(),
        lambda: cast(ScoringPipeline, pipeline),
    )
    policy = IntakePolicy.of(256, 0.005, 5, 500, adjusts_fetch_wait=True)
    return Shell(context, policy, (highwater or {}).get)


def chunk(partition: int, offsets: list[int]) -> Records:
    return Records.of("req", partition, offsets, [b"{}"] * len(offsets))


def test_readiness_starts_503_is_200_with_the_partitions_once_assigned_and_503_for_good_after_a_fatal() -> None:
    readiness = Readiness(partitions=lambda: [0, 3], worker="w-1")
    assert readiness.answer() == (503, {"status": "starting", "worker": "w-1"})
    readiness.assigned = True
    assert readiness.answer() == (200, {"status": "ready", "worker": "w-1", "partitions": [0, 3]})
    readiness.fatal = "predictions topic deleted"
    assert readiness.answer() == (503, {"status": "failed", "worker": "w-1"})


def test_the_worker_is_ready_once_the_first_assignment_was_taken() -> None:
    async def scenario() -> None:
        pipeline = StandInPipeline({}, {})
        shell = shell_over(pipeline)
        shell.start()
        assert shell.context.readiness.answer()[0] == 503
        await shell.assign([2, 5])
        assert shell.context.readiness.answer() == (200, {"status": "ready", "worker": "", "partitions": [2, 5]})

    asyncio.run(scenario())


def test_the_first_assignment_freezes_what_the_worker_keeps_and_raises_the_young_threshold() -> None:
    """What a worker holds once it runs is never scanned by a collection again (``engines.collector``)."""
    threshold = gc.get_threshold()

    async def scenario() -> None:
        shell = shell_over(StandInPipeline({}, {}))
        shell.start()
        kept = [object() for _ in range(10)], {"model": [1, 2, 3]}
        gc.unfreeze()
        await shell.assign([0])
        assert gc.get_freeze_count() > 0
        assert gc.is_tracked(kept) and gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
        gc.set_threshold(*threshold)
        await shell.assign([1])  # later assignments leave the collector alone
        assert gc.get_threshold() == threshold

    try:
        asyncio.run(scenario())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_verdict_follows_each_partitions_lag_from_the_clients_high_watermark() -> None:
    shell = shell_over(StandInPipeline({}, {}), {0: 10, 1: 300})
    caught_up = shell.judge([chunk(0, [7, 8, 9])], 3)
    behind = shell.judge([chunk(0, [7, 8, 9]), chunk(1, [40])], 4)
    assert caught_up.drained and not behind.drained  # partition 1 has 259 more waiting: a full batch
    unknown = shell.judge([chunk(2, [0])], 1)
    assert unknown.drained  # no high watermark yet, and the chunk came back short
    own = shell.judge([chunk(1, [299])], 1, highwater={1: 300}.get)
    assert own.drained  # the engine's own (thread-side) reading of the watermark


def test_only_a_commit_that_succeeded_is_told_to_the_ledgers() -> None:
    async def scenario() -> None:
        pipeline = StandInPipeline({0: 12, 3: 40}, {})
        shell = shell_over(pipeline)
        shell.start()
        sent: list[dict[int, int]] = []

        async def refused(offsets: dict[int, int]) -> bool:
            sent.append(offsets)
            return False

        async def accepted(offsets: dict[int, int]) -> bool:
            sent.append(offsets)
            return True

        await shell.commit_moved(refused)
        assert ("committed", {0: 12, 3: 40}) not in pipeline.calls
        await shell.commit_moved(accepted)
        assert sent == [{0: 12, 3: 40}] * 2 and pipeline.calls[-1] == ("committed", {0: 12, 3: 40})
        pipeline.due = {}
        await shell.commit_moved(accepted)
        assert len(sent) == 2  # nothing moved: nothing committed

    asyncio.run(scenario())


def test_partitions_that_go_are_finished_first_then_committed_at_their_final_positions() -> None:
    async def scenario() -> None:
        pipeline = StandInPipeline({}, {0: 12, 1: 30})
        shell = shell_over(pipeline)
        shell.start()
        order: list[str] = []

        async def commit(offsets: dict[int, int]) -> bool:
            order.append(f"commit {offsets}")
            return True

        await shell.revoke([1], commit)
        assert [c for c in pipeline.calls if c[0] == "revoke"] == [("revoke", [1])]
        assert order == ["commit {1: 30}"]
        await shell.stop(commit, timeout_s=5)
        assert order[-1] == "commit {0: 12, 1: 30}" and ("stop", None) in pipeline.calls

    asyncio.run(scenario())


def test_a_stop_that_does_not_finish_in_time_commits_nothing() -> None:
    async def scenario() -> None:
        pipeline = StandInPipeline({}, {0: 12})
        pipeline.stop_takes_s = 10.0
        shell = shell_over(pipeline)
        shell.start()
        committed: list[dict[int, int]] = []

        async def commit(offsets: dict[int, int]) -> bool:
            committed.append(offsets)
            return True

        await shell.stop(commit, timeout_s=0.01)
        assert committed == []

    asyncio.run(scenario())


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on a thread of its own, as the batch engine's loop beside its consume thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop

    async def cancel_the_rest() -> None:
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(cancel_the_rest(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_client_owned_by_another_thread_commits_on_that_thread_with_the_same_steps(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    pipeline = StandInPipeline({4: 9}, {4: 11})
    shell = shell_over(pipeline)
    on_loop = run_on_loop(loop_thread)

    async def start() -> None:
        shell.start()

    on_loop(start())
    threads: list[str] = []

    def commit(offsets: dict[int, int]) -> bool:
        threads.append(threading.current_thread().name)
        return True

    shell.commit_moved_from_thread(on_loop, commit)
    shell.revoke_from_thread(on_loop, [4], commit)
    shell.stop_from_thread(on_loop, commit)
    assert threads == [threading.current_thread().name] * 3  # never on the loop's thread
    names = [name for name, _ in pipeline.calls]
    assert names == ["start", "commits", "committed", "revoke", "stop"]
