"""A worker whose settings hold secrets, against Redis with an ACL user: it scores and logs its predictions
through that user, and no secret appears in its log, its ``/metrics`` page or its ``/ready`` answer.

The secrets: the Redis ACL password (in ``STREAMER_REDIS_URL``, as a managed Redis hands it out) and a
``sasl.password`` in ``[kafka.client]`` (ignored by a plain-text listener, which librdkafka says in a warning:
the warning must name the property, never its value). One engine: the Redis and Kafka client code that holds
the secrets is shared by both.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable

import msgspec
import pytest
import redis

from streamer import synthetic
from streamer.adapters import devstack
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.integration.test_redis_acl import PASSWORD, acl_redis  # noqa: F401 (the fixture)

KAFKA_SECRET = "kafka-Sasl-pw-41d9"  # a test secret that must never be printed


@pytest.fixture
def engine() -> str:
    return "batch"


def _page(worker: WorkerProcess, path: str) -> str:
    match = re.search(r"metrics: http://([\d.]+:\d+)/metrics", worker.log())
    assert match, "the worker did not print its metrics address"
    with urllib.request.urlopen(f"http://{match.group(1)}{path}", timeout=5) as response:
        return response.read().decode()


def test_a_worker_with_secrets_uses_the_acl_user_and_never_shows_a_secret(
    kafka_broker: devstack.ServerInfo,
    acl_redis: int,  # noqa: F811
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    t = topics(partitions=2)
    config = f'[kafka.client]\n"sasl.password" = "{KAFKA_SECRET}"\n'
    worker = worker_factory(t, config, STREAMER_REDIS_URL=f"redis://streamer:{PASSWORD}@127.0.0.1:{acl_redis}/0")
    worker.wait_assigned()
    count = 40
    rows = synthetic.transactions(count)
    requests = [
        (f"k-{i}".encode(), msgspec.json.encode({"id": f"r-{i}", "features": synthetic.features_of(row)}), None)
        for i, row in enumerate(rows)
    ]
    produce(kafka_broker.address, t.requests, requests)
    assert len(read_all(kafka_broker.address, [t.predictions], count, settle_s=0.2)) == count

    # the predictions reach Redis through the ACL user (the only enabled user, confined to streamer:*)
    client = redis.Redis(host="127.0.0.1", port=acl_redis, username="streamer", password=PASSWORD)
    deadline = time.monotonic() + 30
    while not list(client.scan_iter("streamer:*", count=1000)):
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    metrics = _page(worker, "/metrics")
    assert not re.search(r"^streamer_redis_errors_total\{[^}]*\} [1-9]", metrics, re.M), metrics
    pages = {"log": worker.log(), "/metrics": metrics, "/ready": _page(worker, "/ready")}
    for where, text in pages.items():
        for secret in (PASSWORD, KAFKA_SECRET):
            assert secret not in text, f"a secret appears in the worker's {where}"
