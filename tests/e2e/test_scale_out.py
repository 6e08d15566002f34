"""Scaling out: two workers in one group split the partitions, and exactly-once holds across the rebalance."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamer.adapters import devstack
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.e2e.test_scoring_path import check_exactly_once_in_order, make_requests


def test_two_workers_split_the_partitions_and_answer_each_request_once(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(8)
    messages, _ = make_requests(4000, keys=300, seed=17)
    first = worker_factory(t)
    first.wait_assigned()
    produce(kafka_broker.address, t.requests, messages[:1000], rate=2000)  # the first worker alone
    second = worker_factory(t)  # joins while traffic flows: a rebalance mid-stream
    produce(kafka_broker.address, t.requests, messages[1000:2500], rate=2000)
    deadline = time.monotonic() + 60
    split: tuple[list[int], list[int]] | None = None
    while time.monotonic() < deadline:
        a, b = first.ready(), second.ready()
        if a and b and a["partitions"] and b["partitions"]:
            pa, pb = a["partitions"], b["partitions"]
            if not set(pa) & set(pb) and sorted(pa + pb) == list(range(8)):
                split = (pa, pb)
                break
        time.sleep(0.5)
    assert split, f"the partitions were not split: {first.ready()} / {second.ready()}"
    print(f"partitions split {split[0]} / {split[1]}")
    produce(kafka_broker.address, t.requests, messages[2500:], rate=2000)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == len(messages)
