"""The broker killed (SIGKILL) under load and restarted on the same storage and port.

The session's embedded broker keeps everything in memory, so a restarted one has forgotten every topic, record
and committed offset; here the broker is a Tansu of its own on ``s3://`` storage (a local moto S3 server, the
``moto[server]`` dev dependency), where topics, records and committed offsets survive a restart. This module
overrides ``kafka_broker``, so the e2e ``topics`` and ``worker_factory`` fixtures use that broker.

What Tansu 0.6.0 on ``s3://`` does across a SIGKILL that lands while produces are in flight (measured here and
in probes, 2026-11-26): it restarts in about 0.1 s with its topics, records and committed offsets; the
idempotent producer's retried batch is logged as ``DuplicateSequenceNumber``; high watermarks read back are
wrong (lower than the last offset), so lag is checked from the committed offsets against the requests read;
every fetch with a 5 ms max wait (streamer's default ``kafka.fetch_wait_max_ms``) then comes back empty for good
(50 ms reads everything), so the worker here runs with 50 ms; and even so the batch-engine worker rides the
restart out without an exit but never receives the last few requests of a partition (1-4 of 300 still
unanswered 12-100 s after the restart, lag > 0, no stall exit: it holds no work, it only gets no records). Long
form (20 s down, 1,200 requests): Faust engine, 2 acknowledged requests lost by the broker, the other 1,198
answered once; batch engine, 1 lost and 23 sources with two outputs each as a reader sees them (written twice
or served twice: not isolated). In probes without a worker the broker lost 1 of 300 and 5 of 1,500 requests
it had acknowledged (3 of 300 in one short-form run, whose worker answered the other 297 once). So the test is
a strict xfail: the invariants are asserted in full and fail on this broker today; it passes, and then fails
as XPASS, the day they hold.

It records a defect of the embedded broker, not a guarantee of streamer, so it is not part of ``make test``
(its file name is not collected there): ``make chaos`` names it explicitly and runs it with the fault suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streamer.adapters import devstack
from tests.chaos.test_faults import LONG, RSS_BOUND_MB, RssSampler, engines
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.e2e.test_scoring_path import check_exactly_once_in_order, make_requests

# The documented exit codes (docs/contract.md, "Exit codes") a worker may end with when the broker vanishes under it:
# 3 (an output could not be delivered / the producer failed), 5 (no progress for stall_timeout_s), 6 (the broker
# did not answer at start). 1 would be a bug; 2 and 4 would be a wrong diagnosis.
BROKER_LOSS_EXIT_CODES = {3, 5, 6}
BUCKET = "tansu"
# Measured: after a SIGKILL that lands while a produce is in flight, this Tansu answers every fetch whose
# max wait is 5 ms (streamer's default ``kafka.fetch_wait_max_ms``, and the e2e reader's) with nothing, for
# good, while a 50 ms wait reads everything. So the worker and the test's readers ask with 50 ms here.
FETCH_WAIT_MS = 50
WORKER_CONFIG = f"[kafka]\nfetch_wait_max_ms = {FETCH_WAIT_MS}\n"


class S3Broker:
    """moto's S3 server and a Tansu on ``s3://tansu/`` in it; ``kill`` and ``start`` keep the bucket and port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.s3_port, self.port = devstack.free_port(), devstack.free_port()
        self.address = f"127.0.0.1:{self.port}"
        moto_server = Path(sys.executable).parent / "moto_server"  # the dev extra's moto[server]
        self._moto = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(self.s3_port)],
            stdout=open(directory / "moto.log", "wb"),  # noqa: SIM115 -- the child owns it
            stderr=subprocess.STDOUT,
            preexec_fn=devstack._die_with_parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{self.s3_port}/{BUCKET}", method="PUT")
                urllib.request.urlopen(request, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self._moto.poll() is not None:
                    raise AssertionError(devstack.log_tail(directory / "moto.log")) from None
                time.sleep(0.1)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start Tansu and wait until it answers; returns how long that took."""
        self.starts += 1
        log_path = self.directory / f"broker-{self.starts}.log"
        url = f"tcp://{self.address}"
        argv = [devstack.broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        argv += ["--storage-engine", f"s3://{BUCKET}/"]
        env = os.environ | {
            "AWS_ENDPOINT": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "RUST_LOG": "warn",
        }
        started = time.monotonic()
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=devstack._die_with_parent
            )
        devstack._wait_ready("broker", self.process.pid, log_path, devstack.kafka_probe(self.address), 30)
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def info(self) -> devstack.ServerInfo:
        assert self.process is not None
        log_path = str(self.directory / f"broker-{self.starts}.log")
        return devstack.ServerInfo("broker", self.process.pid, self.port, self.address, log_path, "tansu", 0.0)

    def close(self) -> None:
        for process in (self.process, self._moto):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)


@pytest.fixture(scope="module")
def s3_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Broker]:
    broker = S3Broker(tmp_path_factory.mktemp("s3-broker"))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="module")
def kafka_broker(s3_broker: S3Broker) -> devstack.ServerInfo:
    """The e2e fixtures' broker, for this module: the one on S3 (its address does not change across restarts)."""
    return s3_broker.info()


def source_of(message: object) -> tuple[str, str]:
    headers = dict(message.headers() or [])  # type: ignore[attr-defined]
    return headers["streamer-source-partition"].decode(), headers["streamer-source-offset"].decode()


def committed_lag(bootstrap: str, topics: Topics, requests: list) -> int:
    """Requests not yet covered by the group's committed offsets (end offsets from the requests read)."""
    ends: dict[int, int] = {}
    for message in requests:
        ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [TopicPartition(topics.requests, p) for p in sorted(ends)]
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(topics.group, wanted)])[topics.group]
    committed = {tp.partition: tp.offset for tp in future.result(10).topic_partitions}
    return sum(end - max(committed.get(p, 0), 0) for p, end in ends.items())


@engines("batch")
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Tansu 0.6.0 on s3:// after a SIGKILL mid-produce: a worker stops receiving a partition's last "
    "requests (never answered, lag > 0, no exit); acknowledged requests lost; repeated outputs (module docstring)",
)
def test_the_broker_killed_and_restarted_under_load_loses_and_duplicates_nothing(
    s3_broker: S3Broker,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL the broker while requests flow, restart it after ``down_s`` on the same bucket and port. The worker
    rides it out or exits with a documented code and is replaced; either way every request is answered exactly
    once, in order per key, and the group's committed offsets reach the end of the requests."""
    down_s, count, rate, answer_s = (20.0, 1_200, 40.0, 120.0) if LONG else (3.0, 300, 60.0, 12.0)
    address = s3_broker.address
    monkeypatch.setattr(e2e, "Consumer", lambda config: Consumer(config | {"fetch.wait.max.ms": FETCH_WAIT_MS}))
    t = topics(2)
    messages, _ = make_requests(count, keys=60, seed=31)
    workers = [worker_factory(t, WORKER_CONFIG)]
    workers[0].wait_assigned()
    exits: list[int] = []
    stop = threading.Event()

    def supervise() -> None:  # as a supervisor would: an exited worker is replaced
        while not stop.wait(0.25):
            if workers[-1].process.poll() is not None:
                exits.append(workers[-1].process.returncode)
                workers.append(worker_factory(t, WORKER_CONFIG))

    producer = threading.Thread(target=produce, args=(address, t.requests, messages, rate))
    supervisor = threading.Thread(target=supervise, daemon=True)
    with RssSampler(workers) as rss:
        producer.start()
        supervisor.start()
        time.sleep(0.4 * count / rate)
        killed_at = time.monotonic()
        s3_broker.kill()
        time.sleep(down_s)
        ready_s = s3_broker.start()
        back_at = time.monotonic()
        producer.join(120)
        assert not producer.is_alive()
        requests = read_all(address, [t.requests], count, timeout_s=answer_s if LONG else 5.0, settle_s=0.2)
        outputs = read_all(address, [t.predictions, t.dlq], count, timeout_s=answer_s, settle_s=1.0)
        answered_s = time.monotonic() - back_at
        stop.set()
        supervisor.join(5)
    what = f"exited {exits} and was replaced" if exits else "rode it out (no exit)"
    print(
        f"broker SIGKILLed {killed_at - workers[0].started:.1f} s into the run, down {back_at - killed_at:.1f} s "
        f"(ready {ready_s:.2f} s after its restart): the worker {what}; {len(requests)} of {count} acknowledged "
        f"requests readable; {len(outputs)} outputs ({len(outputs) - len(set(source_of(m) for m in outputs))} repeats) "
        f"{answered_s:.1f} s after the restart; "
        f"peak worker RSS {rss.peak:.0f} MB"
    )
    assert all(code in BROKER_LOSS_EXIT_CODES for code in exits), (exits, workers[-2].log()[-3000:])
    assert len(requests) == count, "the broker lost requests it had acknowledged"
    predictions = check_exactly_once_in_order(t, address, messages, outputs)
    assert len(predictions) == count
    lag_deadline = time.monotonic() + 10
    while (lag := committed_lag(address, t, requests)) and time.monotonic() < lag_deadline:
        time.sleep(0.5)
    assert lag == 0, f"{lag} requests answered but not committed"
    alive = [w for w in workers if w.process.poll() is None]
    assert len(alive) == 1, Counter(w.process.returncode for w in workers)
    assert 0 < rss.peak < RSS_BOUND_MB
    assert alive[0].terminate() == 0
