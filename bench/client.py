"""streamer.client against one batch-engine worker on the embedded stack: what the client adds to a round trip.

    .venv/bin/python bench/client.py [--sequential 300] [--many 5000] [--concurrent 2000]

Figures, each against a baseline of the same run:
- sequential ``score()``: p50/p99 of the client's round trip against the worker's own ``latency_ms`` (request
  timestamp to prediction written) of the same requests -- the ratio is what the client and the two fetches add;
- ``score_many(N)``: answers/s against a bare confluent-kafka produce-then-consume of the same N requests
  through the same worker (no id matching, no futures) -- the ratio is the client's cost at volume;
- ``ascore()`` x N concurrently on one event loop: answers/s against ``score_many(N)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

from common import ROOT, record
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.client import ScoringClient


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bare_round_trip(bootstrap: str, features: list[dict], partitions: int) -> float:
    """Answers/s of N requests produced at once and their N predictions consumed, with plain confluent-kafka."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-bare", "fetch.wait.max.ms": 5})
    consumer.assign([TopicPartition("pred", p, OFFSET_END) for p in range(partitions)])
    consumer.consume(1, 1.0)  # positioned before the first send
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True})
    producer.produce("warm", b"x")  # connected and its producer id fetched before the clock starts, as the client's
    producer.flush(30)
    started = time.perf_counter()
    for i, row in enumerate(features):
        producer.produce("req", json.dumps({"id": f"bare-{i}", "features": row}).encode(), f"k{i}".encode())
    producer.flush(30)
    got = 0
    deadline = time.monotonic() + 60
    while got < len(features) and time.monotonic() < deadline:
        got += sum(1 for m in consumer.consume(5000, 0.05) if m.error() is None and b'"bare-' in m.value())
    elapsed = time.perf_counter() - started
    consumer.close()
    return got / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--many", type=int, default=5000)
    parser.add_argument("--concurrent", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="streamer-bench-client-"))
    broker = devstack.start_broker(workdir / "broker", die_with_parent=True)
    rows = synthetic.transactions(max(args.sequential, args.many, args.concurrent), seed=3)
    features = [synthetic.features_of(row) for row in rows]
    partitions = 8
    results: dict = {}
    try:
        KafkaAdmin(broker.address).create_topics(["req", "pred", "fb", "dlq", "warm"], partitions)
        env = {
            "STREAMER_KAFKA_BOOTSTRAP": broker.address,
            "STREAMER_MODELS_DIR": str(ROOT / "models"),
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_STATE_DIR": str(workdir / "state"),
            "STREAMER_ENGINE": "batch",
            "STREAMER_REQUESTS_TOPIC": "req",
            "STREAMER_PREDICTIONS_TOPIC": "pred",
            "STREAMER_FEEDBACK_TOPIC": "fb",
            "STREAMER_DLQ_TOPIC": "dlq",
            "STREAMER_GROUP_ID": "bench-client",
        }
        log_path = workdir / "worker.log"
        worker = devstack.start_worker(workdir, log_path, env)
        while not re.search(r"assigned partitions \[", log_path.read_text(errors="replace")):
            time.sleep(0.1)
        started = time.perf_counter()
        client = ScoringClient(broker.address, requests_topic="req", predictions_topic="pred", dlq_topic="dlq")
        results["client_start_ms"] = (time.perf_counter() - started) * 1000
        client.score(features[0], timeout_s=60)  # the worker's first batch (its warm-up) is not counted
        trips, worker_side = [], []
        for i in range(args.sequential):
            started = time.perf_counter()
            prediction = client.score(features[i], key=f"k{i}")
            trips.append((time.perf_counter() - started) * 1000)
            worker_side.append(prediction.latency_ms or 0.0)
        for q in (0.5, 0.99):
            name = f"p{round(q * 100)}"
            results[f"sequential_{name}_ms"] = quantile(trips, q)
            results[f"worker_{name}_ms"] = quantile(worker_side, q)
            results[f"sequential_{name}_ratio"] = quantile(trips, q) / max(quantile(worker_side, q), 1e-9)
        started = time.perf_counter()
        client.score_many(features[: args.many])
        results["score_many_per_s"] = args.many / (time.perf_counter() - started)
        results["bare_per_s"] = bare_round_trip(broker.address, features[: args.many], partitions)
        results["score_many_vs_bare"] = results["score_many_per_s"] / results["bare_per_s"]

        async def concurrently(count: int) -> float:
            started = time.perf_counter()
            await asyncio.gather(*(client.ascore(features[i], key=f"k{i}") for i in range(count)))
            return count / (time.perf_counter() - started)

        results["ascore_per_s"] = asyncio.run(concurrently(args.concurrent))
        results["ascore_vs_score_many"] = results["ascore_per_s"] / results["score_many_per_s"]
        client.close()
        worker.terminate()
        worker.wait(30)
    finally:
        devstack.stop_server(broker)
    for name, value in results.items():
        print(f"{name:28} {value:12,.2f}")
    record("client", {"args": vars(args), **results})


if __name__ == "__main__":
    main()
