"""No stall, ever: big requests, a broker that stops answering, an output topic deleted under the worker.

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
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

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


def test_a_deleted_output_topic_makes_the_worker_say_so_and_exit(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """Found from outside: the embedded broker acknowledges writes to a deleted topic. The worker must notice."""
    t = topics(2)
    worker = worker_factory(t, config="[worker]\ntopic_check_interval_s = 0.5\n")
    worker.wait_assigned()
    messages, _ = make_requests(200, keys=20, seed=63)
    produce(kafka_broker.address, t.requests, messages)
    assert len(read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))) == len(messages)
    admin = AdminClient({"bootstrap.servers": kafka_broker.address})  # kept: a dropped client cancels its futures
    admin.delete_topics([t.predictions])[t.predictions].result(10)
    assert worker.wait_exit(30) == 4
    assert f"{t.predictions} no longer exists" in worker.log()
