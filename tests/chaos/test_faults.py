"""Faults under load, both engines, with the invariants every run must keep: exactly one output per request,
per-key order, the workers alive at the end (or replaced), memory bounded, every request answered once the fault
is over (lag back to zero).

Short form in ``make test`` (each fault on one engine); ``make chaos`` sets ``STREAMER_CHAOS_LONG=1`` for the
long form (both engines, 10 kills, a 20 s broker pause at 1,000 requests/s, more requests). Every wait has a bound.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streamer.adapters import devstack
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.e2e.test_scoring_path import check_exactly_once_in_order, make_requests

LONG = os.environ.get("STREAMER_CHAOS_LONG") == "1"


def engines(short: str) -> pytest.MarkDecorator:
    """Both engines in the long form; in the short form (``make test``) each fault runs on one engine, the
    faults split between the two, so that the suite stays within its time budget on two cores."""
    return pytest.mark.parametrize("engine", ["faust", "batch"] if LONG else [short])


RSS_BOUND_MB = 600  # per worker; measured peaks are in the test output


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """The largest resident set of any live worker, sampled every 0.25 s."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers, self.peak = workers, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for worker in list(self.workers):
                if worker.process.poll() is None:
                    self.peak = max(self.peak, rss_mb(worker.process.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2)


@engines("faust")
def test_workers_killed_at_random_moments_under_load_lose_and_duplicate_nothing(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    kills, count, rate = (10, 12_000, 400.0) if LONG else (3, 3_000, 300.0)
    t = topics(8)
    messages, _ = make_requests(count, keys=300, seed=21)
    workers = [worker_factory(t), worker_factory(t)]
    for worker in workers:
        worker.wait_assigned()
    producer = threading.Thread(target=produce, args=(kafka_broker.address, t.requests, messages, rate))
    rng = random.Random(21)
    with RssSampler(workers) as rss:
        producer.start()
        span = count / rate
        moments = sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in range(kills))
        started = time.monotonic()
        for moment in moments:
            time.sleep(max(0.0, started + moment - time.monotonic()))
            live = [w for w in workers if w.process.poll() is None]
            victim = rng.choice(live)
            victim.kill()
            workers.append(worker_factory(t))  # its replacement joins the group
        producer.join()
        outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], count, timeout_s=120)
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == count
    alive = [w for w in workers if w.process.poll() is None]
    assert len(alive) == 2, "every killed worker was replaced and the survivors are still running"
    print(f"{kills} kill -9 under {rate:.0f} req/s: {count} answered once each; peak worker RSS {rss.peak:.0f} MB")
    assert 0 < rss.peak < RSS_BOUND_MB
    for worker in alive:
        assert worker.terminate() == 0


class Arrivals:
    """When the first output of each request id was read (a read_committed tail of the output topics)."""

    def __init__(self, bootstrap: str, t: Topics, partitions: int) -> None:
        self.first: dict[str, float] = {}
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "arrivals",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        self._consumer.assign(
            [TopicPartition(n, p, OFFSET_BEGINNING) for n in (t.predictions, t.dlq) for p in range(partitions)]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(num_messages=2000, timeout=0.05):
                if message.error() is None:
                    try:
                        request_id = json.loads(message.value())["id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    self.first.setdefault(request_id, time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


RESUME_BOUND_S = 2.0  # after the broker resumes (long form); the short form prints it and allows a loaded machine's
SHORT_RESUME_BOUND_S = 10.0


@engines("batch")
def test_a_broker_paused_under_load_is_waited_out_and_the_worker_resumes_at_once(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """SIGSTOP of the broker while requests keep coming, shorter than ``worker.stall_timeout_s`` (60 s) and than
    the group session (``kafka.session_timeout_ms``, set above the pause here): the worker keeps its group
    membership, resumes as soon as the broker does, and answers everything once, in per-key order; nothing
    restarts.

    Why the session: librdkafka (the batch engine) gives up its own membership after ``session_timeout_ms``
    without an answer from the coordinator, and a rejoin costs seconds on any broker (measured on the embedded
    one with the 6 s default: 11.6 s after a 20 s pause, the abandoned member revived by its last heartbeat and
    elected leader); aiokafka (the Faust engine) keeps its member id and the embedded broker takes its first
    heartbeat after the pause (0.1-0.5 s with either session). Resume time: from SIGCONT to the first output of
    a request sent after the pause began."""
    pause_s, rate, before_s, after_s = (20.0, 1000.0, 5.0, 10.0) if LONG else (8.0, 500.0, 4.0, 4.0)
    count = int(rate * (before_s + pause_s + after_s))
    t = topics(4)
    messages, _ = make_requests(count, keys=100, seed=22)
    config = f"[kafka]\nsession_timeout_ms = {int((pause_s + 10) * 1000)}\n"
    worker = worker_factory(t, config)
    worker.wait_assigned()
    arrivals = Arrivals(kafka_broker.address, t, 4)
    queued_at: list[float] = []

    def produce_at_rate() -> None:
        producer = Producer({"bootstrap.servers": kafka_broker.address, "linger.ms": 5})
        started = time.monotonic()
        for index, (key, value, _) in enumerate(messages):
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
            producer.produce(t.requests, value, key)
            queued_at.append(time.monotonic())
            producer.poll(0)
        assert producer.flush(120) == 0

    producing = threading.Thread(target=produce_at_rate, daemon=True)
    with RssSampler([worker]) as rss:
        producing.start()
        time.sleep(before_s)
        os.kill(kafka_broker.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            time.sleep(pause_s)
            assert worker.process.poll() is None, "the worker outlived the pause"
        finally:
            os.kill(kafka_broker.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        producing.join(before_s + pause_s + after_s + 120)
        outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], count, timeout_s=180)
        arrivals.stop()
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == count
    first_sent_in_pause = next(index for index, at in enumerate(queued_at) if at >= paused_at)
    resumed_s = min(arrivals.first[f"s22-{index}"] for index in range(first_sent_in_pause, count)) - resumed_at
    assert worker.process.poll() is None and "fatal" not in worker.log()
    assert "lost (session expired)" not in worker.log(), "the membership outlived the pause"
    print(
        f"broker paused {pause_s:.0f} s at {rate:.0f} req/s: {count} answered once each; resumed {resumed_s:.2f} s "
        f"after the broker; peak worker RSS {rss.peak:.0f} MB"
    )
    assert resumed_s <= (RESUME_BOUND_S if LONG else SHORT_RESUME_BOUND_S)
    assert rss.peak < RSS_BOUND_MB
    assert worker.terminate() == 0


@engines("batch")
def test_an_overload_burst_through_a_small_producer_queue_is_absorbed_with_bounded_memory(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A backlog far above the sustainable rate lands at once, and the output producer's queue is kept small
    (``queue.buffering.max.messages`` = 100, under one full batch of 256 outputs: the queue fills whatever the
    speed of scoring against delivery), so that the sink's backlog path is met:
    everything is answered once, memory stays bounded, and the latency of requests sent after the burst is back
    to normal."""
    burst = 60_000 if LONG else 10_000
    t = topics(4)
    messages, _ = make_requests(burst + 400, keys=200, seed=23)
    config = '[kafka.client]\n"queue.buffering.max.messages" = 100\n'
    worker = worker_factory(t, config)
    worker.wait_assigned()
    with RssSampler([worker]) as rss:
        produce(kafka_broker.address, t.requests, messages[:burst])  # as fast as the producer goes
        outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], burst, timeout_s=180, settle_s=0.2)
        assert len(outputs) == burst
        produce(kafka_broker.address, t.requests, messages[burst:], rate=200)  # back to a normal rate
        outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], burst + 400, timeout_s=60)
    queue_full = worker.metrics().get("streamer_output_queue_full_total", 0.0)
    assert queue_full > 0, "the burst did not fill the small producer queue: the backlog path was not met"
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == burst + 400
    after = sorted(p["latency_ms"] for pid, p in predictions.items() if int(pid.split("-")[1]) >= burst)
    p50 = after[len(after) // 2]
    print(f"burst of {burst}: queue full {queue_full:.0f} times; peak RSS {rss.peak:.0f} MB; p50 after {p50:.1f} ms")
    assert rss.peak < RSS_BOUND_MB
    assert p50 < 250, "latency is back to normal once the backlog is gone"
    assert worker.process.poll() is None and worker.terminate() == 0


@engines("faust")
def test_a_rebalance_storm_of_workers_joining_and_leaving_answers_every_request_once(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """Workers join and leave (SIGTERM) every few seconds while requests flow; one of them stays throughout."""
    rounds, count, rate = (10, 8_000, 250.0) if LONG else (4, 2_400, 200.0)
    t = topics(8)
    messages, _ = make_requests(count, keys=200, seed=24)
    steady = worker_factory(t)
    steady.wait_assigned()
    producer = threading.Thread(target=produce, args=(kafka_broker.address, t.requests, messages, rate))
    producer.start()
    for _ in range(rounds):
        guest = worker_factory(t)
        time.sleep(2.5)  # joins: a rebalance
        assert guest.terminate() == 0  # leaves: another rebalance, its partitions drained and committed first
    producer.join()
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], count, timeout_s=120)
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == count
    assert steady.process.poll() is None and steady.terminate() == 0
