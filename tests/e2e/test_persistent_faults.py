"""Never alive and waiting forever: a Kafka error that does not clear within ``kafka.error_timeout_s`` is exit 7
with one CRITICAL line naming the cause and the fix -- and what only looks like one (transaction markers, a
transaction still open) is not.

Found from outside: a batch-engine worker started on a group a Faust worker had used received
``INCONSISTENT_GROUP_PROTOCOL`` every 3 s for ever, the reverse logged one ERROR line, and both sat alive and
unready while 600 of 600 requests went unanswered.

Provoked here on the embedded broker: the group-protocol clash (both directions; the embedded broker keeps a
group's protocol after its members left, where Apache Kafka resets an empty group, so the first worker is stopped
first), a request topic deleted under a worker (the Faust engine: exit 4 from the topic watch; on the batch engine
librdkafka 2.16 crashes with SIGSEGV inside its metadata cache when a subscribed topic is deleted on this broker,
before any check can run), and the two lookalikes. Not provokable here: authorization failures (the embedded
broker has no authorizer; ``unit/test_kafka_faults.py`` covers their translation and clock), and partitions that
fetch nothing while behind (the embedded broker does it only after a restart on ``s3://`` storage, recorded by
``chaos/broker_restart.py``; the clock is covered by the unit tests).

The same rule for the background services: one whose Redis refuses its password at run time stops, and the
worker exits 2 (an operator error) with one CRITICAL line, where it used to go on without labels or control.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streamer import synthetic
from streamer.adapters import devstack
from tests.e2e.conftest import Topics, WorkerProcess, read_all

QUICK = "[kafka]\nerror_timeout_s = {bound}\n"
OTHER = {"faust": "batch", "batch": "faust"}


def critical_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " CRITICAL " in line]


def test_a_group_the_other_engine_used_is_exit_7_in_one_line_naming_the_fix(
    engine: str, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(2)
    first = worker_factory(t, STREAMER_ENGINE=OTHER[engine])
    first.wait_assigned()
    assert first.terminate() == 0
    # this test's engine, on the same group; the bound leaves the clash (seen ~3 s into the join) time to be seen
    second = worker_factory(t, QUICK.format(bound=15))
    assert second.wait_exit(90) == 7, second.log()[-3000:]
    [line] = critical_lines(second.log())
    assert "give each engine its own STREAMER_GROUP_ID" in line and "not cleared for" in line, line
    assert "assigned partitions [" not in second.log() and "Traceback" not in second.log()


def transactional_requests(bootstrap: str, topic: str, count: int, transactional_id: str, commit: bool) -> None:
    """``count`` requests in one transaction, committed (a marker follows them) or left open for good."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5})
    producer.init_transactions(30)
    producer.begin_transaction()
    rows = synthetic.transactions(count, seed=5)
    for index, row in enumerate(rows):
        body = {"id": f"{transactional_id}-{index}", "features": synthetic.features_of(row)}
        producer.produce(topic, json.dumps(body).encode(), f"k{index % 7}".encode(), partition=index % 2)
    if commit:
        producer.commit_transaction(30)
    else:
        assert producer.flush(30) == 0  # written, never committed: the partitions' last stable offset stays put


def test_transaction_markers_and_an_open_transaction_leave_an_idle_worker_serving(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A commit marker takes an offset no record carries (by the last consumed offset, an idle partition would be
    one behind for ever), and records of a transaction still open are beyond what a read_committed consumer may
    read (the embedded broker never aborts it): neither is a partition that does not fetch."""
    bound_s = 10.0  # over a first join on the embedded broker (about 3 s), with room for a loaded machine
    t = topics(2)
    worker = worker_factory(t, QUICK.format(bound=bound_s))
    worker.wait_assigned()
    transactional_requests(kafka_broker.address, t.requests, 40, "committed", commit=True)
    assert len(read_all(kafka_broker.address, [t.predictions, t.dlq], 40)) == 40
    transactional_requests(kafka_broker.address, t.requests, 10, "left-open", commit=False)
    time.sleep(2.5 * bound_s)  # idle past the bound: markers at the end of both partitions, a transaction open
    assert worker.process.poll() is None, worker.log()[-3000:]
    assert critical_lines(worker.log()) == []
    assert worker.terminate() == 0


@pytest.mark.parametrize("engine", ["faust"])  # batch: librdkafka 2.16 segfaults here (module docstring)
def test_a_request_topic_deleted_under_a_worker_is_exit_4_naming_it(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(2)
    worker = worker_factory(t)
    worker.wait_assigned()
    admin = AdminClient({"bootstrap.servers": kafka_broker.address})  # kept: a dropped client cancels its futures
    admin.delete_topics([t.requests])[t.requests].result(10)
    assert worker.wait_exit(30) == 4, worker.log()[-3000:]
    [line] = critical_lines(worker.log())
    assert f"{t.requests} no longer exists" in line and "streamer topics create" in line


PASSWORD, CHANGED = "run-Redis-pw-5b1e", "new-Redis-pw-77ac"  # test secrets: neither may appear in the log


@pytest.mark.parametrize("engine", ["batch"])  # the services are the same for both engines
def test_a_worker_whose_redis_refuses_its_password_at_run_time_exits_2_in_one_line(
    tmp_path: Path, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A background service that meets an error no retry can fix stops (``services.runner``), and the worker
    exits with 2 instead of going on without labels, evaluation and the control channel."""
    server = devstack.start_redis(tmp_path / "redis", die_with_parent=True, password=PASSWORD)
    try:
        worker = worker_factory(topics(2), STREAMER_REDIS_URL=server.address, STREAMER_REDIS_PASSWORD=PASSWORD)
        worker.wait_assigned()
        admin = redis.Redis.from_url(server.address, password=PASSWORD)
        admin.config_set("requirepass", CHANGED)
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # the worker reconnects
        assert worker.wait_exit(90) == 2, worker.log()[-3000:]
        log = worker.log()
        [line] = critical_lines(log)
        assert "not retriable" in line and "redis" in line.lower(), line
        assert PASSWORD not in log and CHANGED not in log and "Traceback" not in log
    finally:
        devstack.stop_server(server)
