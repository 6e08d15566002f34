"""End-to-end latency at fixed request rates, against a raw two-hop relay in the same run.

    .venv/bin/python bench/latency.py [--rates 500,2000,5000] [--seconds 6] [--engines faust]

Latency is what a client sees: from producing a request (its Kafka timestamp) to reading its prediction on
the output topic, with producer linger 5 ms and consumer fetch wait 5 ms everywhere. The relay (consume ->
produce, no scoring, confluent-kafka) is the floor: the same two broker hops with nothing in between. The
first second of each run is dropped as warm-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import ROOT, embedded_stack, fresh_topics, record, start_worker, wait_for_log
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from streamer.adapters import devstack
from streamer.adapters.kafka_input import synthetic_requests


def measure(bootstrap: str, requests: str, outputs: list[str], rate: float, seconds: float) -> np.ndarray:
    """Send at ``rate`` for ``seconds``; returns the latencies (ms) of the requests after the first second."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "latency-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    assignment = []
    for topic in outputs:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment += [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    consumer.assign(assignment)
    consumer.consume(num_messages=1, timeout=0.5)  # settle the assignment at the end of the topic
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    count = int(rate * seconds)
    done = threading.Event()

    def read() -> None:
        while not done.is_set() or len(received) < len(sent):
            for message in consumer.consume(num_messages=1000, timeout=0.005):
                if message.error() is None:
                    received[json.loads(message.value())["id"]] = time.time()
            if done.is_set() and time.time() > deadline:
                break

    deadline = float("inf")
    reader = threading.Thread(target=read)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started = time.monotonic()
    for index, message in enumerate(synthetic_requests(count, keys=1000, seed=int(rate))):
        ahead = started + index / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        request_id = f"r-{int(rate)}-{index}"
        sent[request_id] = time.time()
        producer.produce(requests, message.value, message.key)
        producer.poll(0)
    producer.flush(10)
    deadline = time.time() + 30
    done.set()
    reader.join()
    consumer.close()
    warm = int(rate)  # drop the first second
    latencies = [(received[i] - sent[i]) * 1000 for i in list(sent)[warm:] if i in received]
    lost = len(sent) - len(received)
    if lost:
        print(f"  ({lost} of {len(sent)} not received within 30 s)")
    return np.array(latencies)


def summary(latencies: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1), "max_ms": round(float(latencies.max()), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,2000,5000")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--engines", default="faust")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with embedded_stack() as state, tempfile.TemporaryDirectory() as tmp:
        bootstrap = state.kafka_bootstrap
        for rate in (float(r) for r in args.rates.split(",")):
            row = results.setdefault(f"{rate:.0f}/s", {})
            topics = fresh_topics(bootstrap, 8, "requests", "out")
            relay = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "relay.py"), bootstrap, topics["requests"], topics["out"]],
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=devstack._die_with_parent,
            )
            assert relay.stdout is not None and relay.stdout.readline().startswith("READY")
            row["relay (2 hops, no scoring)"] = summary(
                measure(bootstrap, topics["requests"], [topics["out"]], rate, args.seconds)
            )
            relay.kill()
            for engine in args.engines.split(","):
                topics = fresh_topics(bootstrap, 8, "requests", "predictions", "feedback", "dlq")
                worker, log_path = start_worker(
                    bootstrap,
                    topics,
                    Path(tmp) / f"{engine}-{rate:.0f}",
                    STREAMER_ENGINE=engine,
                    STREAMER_LOG_LEVEL="INFO",
                )
                wait_for_log(log_path, r"assigned partitions \[", worker)
                row[f"streamer --engine {engine}"] = summary(
                    measure(bootstrap, topics["requests"], [topics["predictions"], topics["dlq"]], rate, args.seconds)
                )
                worker.terminate()
                worker.wait(60)
    print(f"\n{'rate':>8} {'':30} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for rate, rows in results.items():
        for name, figures in rows.items():
            print(f"{rate:>8} {name:30} {figures['p50_ms']:8.1f} {figures['p99_ms']:8.1f} {figures['max_ms']:8.1f}")
    record("latency", {"seconds": args.seconds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
