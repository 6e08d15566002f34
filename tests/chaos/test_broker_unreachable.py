"""A worker started while the broker is unreachable waits for it (bounded, a log line per attempt), serves once
it answers, and exits 6 in one line when it never does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.devstack import free_port
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all

WAIT = "[kafka]\nstartup_timeout_s = {timeout}\nstartup_retry_s = 0.5\n"


@pytest.mark.parametrize("engine", ["faust"])  # the wait is before either engine starts: one engine serves after it
def test_a_worker_waits_for_a_broker_that_comes_up_after_it_and_then_serves(
    worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    names = Topics("req", "pred", "fb", "req.dlq", "g")
    worker = worker_factory(names, WAIT.format(timeout=60), STREAMER_KAFKA_BOOTSTRAP=address)
    deadline = time.monotonic() + 20
    while worker.log().count("not reachable (attempt") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.log().count("not reachable (attempt") >= 2 and worker.process.poll() is None
    broker = devstack.start_broker(tmp_path / "late-broker", die_with_parent=True, port=port)
    try:
        KafkaAdmin(address).create_topics([names.requests, names.predictions, names.feedback, names.dlq], 2)
        worker.wait_assigned()
        rows = synthetic.transactions(50, seed=3)
        produce(
            address,
            names.requests,
            [
                (b"k", json.dumps({"id": f"u{i}", "features": synthetic.features_of(rows[i])}).encode(), None)
                for i in range(50)
            ],
        )
        assert len(read_all(address, [names.predictions], 50)) == 50
        assert worker.terminate() == 0
    finally:
        devstack.stop_server(broker)


@pytest.mark.parametrize("engine", ["batch"])  # exits before any engine starts
def test_a_broker_that_never_answers_is_exit_6_after_the_bound_in_one_line(
    worker_factory: Callable[..., WorkerProcess], topics: Callable[..., Topics]
) -> None:
    worker = worker_factory(topics(2), WAIT.format(timeout=5), STREAMER_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert worker.wait_exit(30) == 6
    log = worker.log()
    assert log.count("not reachable (attempt") >= 2
    assert "rdkafka" not in log, "one line per attempt is ours; librdkafka's connection errors are not repeated"
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did not answer within kafka.startup_timeout_s=5" in errors[0], log[-2000:]


@pytest.mark.parametrize("engine", ["batch"])  # stopped before any engine starts
def test_a_worker_stopped_while_it_waits_for_the_broker_exits_0_at_once(
    worker_factory: Callable[..., WorkerProcess], topics: Callable[..., Topics]
) -> None:
    """SIGTERM during the start (here: the broker wait) is a clean stop, not a death by signal: nothing was
    consumed, and the process manager sees exit 0."""
    worker = worker_factory(topics(2), WAIT.format(timeout=60), STREAMER_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    deadline = time.monotonic() + 20
    while "not reachable (attempt" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    assert worker.terminate(timeout_s=10) == 0, worker.log()[-2000:]
    assert time.monotonic() - started < 5
    assert "stopped by SIGTERM before serving" in worker.log()
    assert "Traceback" not in worker.log()
