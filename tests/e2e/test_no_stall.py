"""No stall, ever: big requests, a broker that stops answering, an output topic deleted or shrunk under load.

Each was found from outside first: a 2 MB request whose dead letter the producer refused wedged its partition
while the worker stayed healthy; a worker whose output topic was deleted went on "delivering" into it. Here a
request is always answered (its dead letter cut to fit the topic only when it would not fit), and a worker that
cannot make progress exits non-zero -- and its replacement answers everything exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamer import synthetic
from streamer.adapters import devstack
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all
from tests.e2e.test_scoring_path import check_exactly_once_in_order, make_requests

GOOD = synthetic.features_of(synthetic.transactions(1, seed=3)[0])
HOSTILE = [
    b"\x00\xffnot json at all",
    b'{"id": "x", "note": "\xff\xfe", "features": ' + json.dumps(GOOD).encode() + b"}",  # invalid UTF-8, unread
    json.dumps({"features": {"amount": 1.0}}).encode(),
    json.dumps({"features": GOOD, "model": "nope"}).encode(),
    json.dumps({"inputs": [{"name": "nope", "shape": [1, 6], "datatype": "FP32", "data": [0] * 6}]}).encode(),
    b"[1, 2, 3]",
]


def big_request(size: int, tag: str) -> bytes:
    head = json.dumps({"id": tag, "features": GOOD, "padding": ""}).encode()[:-2]
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_big_requests_are_answered_and_their_partition_keeps_flowing(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """2,000 requests, ~15 % hostile, among them a 2 MB one (its dead letter fits: the original bytes) and a 3 MB
    one over the dead-letter topic's max.message.bytes (its dead letter is cut, with the original's size and
    sha256), both on a key that keeps sending after them."""
    t = topics(4, dlq_config={"max.message.bytes": "2500000"})
    messages, _ = make_requests(2000, keys=100, seed=61)
    for index in range(0, 2000, 7):
        messages[index] = (messages[index][0], HOSTILE[index % len(HOSTILE)], None)
    two_mb, three_mb = big_request(2_000_000, "two-mb"), big_request(3_000_000, "three-mb")
    messages[500] = (b"heavy-key", two_mb, [("trace", b"t-1")])
    messages[900] = (b"heavy-key", three_mb, None)
    for index in (501, 901, 1500, 1999):  # the same key after the big ones: its partition must keep flowing
        messages[index] = (b"heavy-key", messages[index][1], None)
    worker = worker_factory(t)
    worker.wait_assigned()
    produce(kafka_broker.address, t.requests, messages)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages), timeout_s=120)
    check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    dead = {(o.key(), len(o.value())): o for o in outputs if o.topic() == t.dlq and o.key() == b"heavy-key"}
    whole = dead[(b"heavy-key", len(two_mb))]
    assert whole.value() == two_mb
    headers = headers_of(whole)
    assert headers["streamer-error"] == b"too-large" and headers["trace"] == b"t-1"
    assert "streamer-original-size" not in headers  # it fitted: never cut without need
    [cut] = [o for (key, size), o in dead.items() if size < len(three_mb) and size > 2_000_000]
    headers = headers_of(cut)
    assert headers["streamer-error"] == b"too-large"
    assert headers["streamer-original-size"] == str(len(three_mb)).encode()
    assert headers["streamer-original-sha256"] == hashlib.sha256(three_mb).hexdigest().encode()
    assert three_mb.startswith(cut.value()) and len(cut.value()) < 2_500_000
    metrics = worker.metrics()
    assert metrics["streamer_dead_letters_cut_total"] == 1
    assert metrics['streamer_dead_letters_total{reason="invalid-json"}'] >= 2 * 2000 // 7 // len(HOSTILE)
    assert worker.process.poll() is None and worker.ready() is not None


def test_a_broker_that_stops_answering_makes_the_worker_exit_and_its_replacement_recovers(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """The broker is paused (SIGSTOP) while outputs are in flight: no delivery report ever comes, the watchdog
    sees the partitions hold work without progress, and the worker exits 5 instead of sitting alive and stuck.
    Once the broker is back, a new worker reads back what reached the log and answers the rest, exactly once."""
    t = topics(4)
    messages, _ = make_requests(20_000, keys=200, seed=62)
    produce(kafka_broker.address, t.requests, messages)
    config = "[worker]\nstall_timeout_s = 3.0\n"
    watcher = Consumer(
        {
            "bootstrap.servers": kafka_broker.address,
            "group.id": "watch",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    watcher.assign([TopicPartition(t.predictions, p, OFFSET_BEGINNING) for p in range(4)])
    first = worker_factory(t, config=config)
    deadline = time.monotonic() + 60
    while watcher.poll(0.005) is None:  # pause the broker as soon as outputs flow: mid-stream, work in flight
        assert time.monotonic() < deadline, "no output before the pause"
    os.kill(kafka_broker.pid, signal.SIGSTOP)
    try:
        code = first.wait_exit(30)
    finally:
        os.kill(kafka_broker.pid, signal.SIGCONT)
        watcher.close()
    assert code == 5, first.log()[-3000:]
    assert "without progress" in first.log()
    second = worker_factory(t, config=config)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages), timeout_s=120)
    check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert second.process.poll() is None


class Tail:
    """Reads the output topics as they are written, from a thread: the source (partition, offset) of every output
    a reader could see, until ``stop``. Stopped before the topic goes: librdkafka 2.16 crashes (SIGSEGV in its
    metadata cache) when a topic it reads is deleted on the embedded broker."""

    def __init__(self, bootstrap: str, names: list[str], partitions: int) -> None:
        self.seen: set[tuple[int, int]] = set()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "tail",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        self._consumer.assign([TopicPartition(n, p, OFFSET_BEGINNING) for n in names for p in range(partitions)])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(num_messages=1000, timeout=0.05):
                if message.error() is None:
                    headers = headers_of(message)
                    self.seen.add((int(headers["streamer-source-partition"]), int(headers["streamer-source-offset"])))

    def stop(self) -> set[tuple[int, int]]:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(10)
            self._consumer.close()
        return set(self.seen)


def committed_requests(bootstrap: str, t: Topics, partitions: int) -> set[tuple[int, int]]:
    """(partition, offset) of every request below the group's committed offsets: what the group calls done."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": t.group, "enable.auto.commit": False})
    try:
        offsets = reader.committed([TopicPartition(t.requests, p) for p in range(partitions)], timeout=10)
    finally:
        reader.close()
    return {(tp.partition, o) for tp in offsets if tp.offset > 0 for o in range(tp.offset)}


VOID_BOUND = 600  # 3 s of outputs at 200/s: the 2 s watch, a commit interval, a loaded machine


@pytest.mark.parametrize("fault", ["deleted", "shrunk"])
def test_an_output_topic_lost_under_load_is_found_in_seconds_with_few_outputs_in_the_void(
    fault: str,
    engine: str,
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """Found from outside: the embedded broker acknowledges writes to a deleted topic, and to partitions a
    recreated, smaller one does not have; the worker commits them. Its watch (``worker.topic_check_interval_s``,
    2 s by default) must stop it first: the void -- requests the group committed whose outputs no reader saw
    before the topic went, so that their replacement will never answer them (an upper bound: what was written in
    the last milliseconds before the deletion counts too) -- stays a few hundred at 200/s."""
    partitions, rate = 4, 200.0
    t = topics(partitions)
    messages, _ = make_requests(4000, keys=100, seed=63)
    worker = worker_factory(t)  # the default watch interval
    worker.wait_assigned()
    tail = Tail(kafka_broker.address, [t.predictions, t.dlq], partitions)
    stop_producing = threading.Event()

    def produce_until_stopped() -> None:
        producer = Producer({"bootstrap.servers": kafka_broker.address, "linger.ms": 5})
        started = time.monotonic()
        for index, (key, value, _) in enumerate(messages):
            if stop_producing.is_set():
                break
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
            producer.produce(t.requests, value, key)
            producer.poll(0)
        producer.flush(30)

    producing = threading.Thread(target=produce_until_stopped, daemon=True)
    producing.start()
    try:
        deadline = time.monotonic() + 60
        while len(tail.seen) < 600:  # 3 s of steady flow first
            assert time.monotonic() < deadline and worker.process.poll() is None, worker.log()[-3000:]
            time.sleep(0.05)
        admin = AdminClient({"bootstrap.servers": kafka_broker.address})  # kept: a dropped client cancels futures
        seen = tail.stop()  # what a reader saw; outputs written in the few ms to the deletion count as void
        admin.delete_topics([t.predictions])[t.predictions].result(10)
        lost_at = time.monotonic()
        if fault == "shrunk":  # the same name, fewer partitions: outputs of partitions 2 and 3 have nowhere to go
            deadline = time.monotonic() + 30
            while True:
                futures = admin.create_topics([NewTopic(t.predictions, partitions // 2, 1)])
                try:
                    futures[t.predictions].result(10)
                    break
                except KafkaException:  # the deletion is still going on
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        code = worker.wait_exit(60)
        detected_s = time.monotonic() - lost_at
    finally:
        stop_producing.set()
        producing.join(30)
        tail.stop()
    # 4: the watch saw it; 3: the producer failed first (writing to the recreated topic, the embedded broker
    # answers a sequence it does not know with an error that breaks the gapless guarantee)
    assert code in (3, 4), worker.log()[-3000:]
    [line] = [line for line in worker.log().splitlines() if " CRITICAL " in line]
    assert t.predictions in line and "Traceback" not in worker.log(), line
    void = committed_requests(kafka_broker.address, t, partitions) - seen
    print(f"{engine}: {fault} predictions topic at {rate:.0f}/s: exit {code} {detected_s:.1f} s after; void", len(void))
    assert len(void) <= VOID_BOUND, f"{len(void)} committed requests whose outputs went into the void"
