"""End-to-end latency at fixed request rates, against a raw two-hop relay in the same run.

    .venv/bin/python bench/latency.py [--rates 500,2000,5000] [--seconds 6] [--engines faust,batch]
        [--before-code DIR --engines before:faust,faust]

Latency is what a client sees: from producing a request (its send time, carried in its key) to reading its
prediction on the output topic, with producer linger 5 ms and consumer fetch wait 5 ms everywhere. The relay (consume ->
produce, no scoring, confluent-kafka) is the floor: the same two broker hops with nothing in between. The
first second of each run is dropped as warm-up. An engine named ``before:ENGINE`` runs the worker from the
checkout ``--before-code DIR`` (``git worktree add DIR COMMIT``); ``ENGINE+threads=N`` or ``+kafka.KEY=VALUE``
set the worker's ``[worker] scoring_threads`` or a ``[kafka]`` setting (as in ``throughput.py``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, batch_stats, embedded_stack, fresh_topics, record, row_config, start_worker, wait_for_log
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from streamer.adapters import devstack
from streamer.synthetic import synthetic_requests


def _read(bootstrap: str, outputs: list[str], expected: int, seconds_after: float, result: Any, ready: Any) -> None:
    """Reader process: latency = arrival time - the send time carried in the key (echoed byte for byte)."""
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
    consumer.consume(num_messages=1, timeout=0.5)  # settle the assignment at the end of the topics
    ready.set()
    latencies: list[float] = []
    deadline = None
    while len(latencies) < expected:
        for message in consumer.consume(num_messages=1000, timeout=0.005):
            key = message.key()
            if message.error() is None and key is not None and key.isdigit():  # not one of ours otherwise
                latencies.append(time.time() * 1000 - int(key) / 1e6)
        if deadline is None and len(latencies) > 0:
            deadline = time.monotonic() + seconds_after
        if deadline is not None and time.monotonic() > deadline:
            break
    consumer.close()
    result.put(latencies)


def measure(bootstrap: str, requests: str, outputs: list[str], rate: float, seconds: float) -> np.ndarray:
    """Send at ``rate`` for ``seconds``; returns the latencies (ms) of the requests after the first second.

    The load generator and the reader are separate processes (each its own GIL), and the reader parses
    nothing: each request's key is its send time in nanoseconds, and outputs carry the request's key.
    """
    count = int(rate * seconds)
    context = multiprocessing.get_context("fork")
    result, ready = context.Queue(), context.Event()
    reader = context.Process(target=_read, args=(bootstrap, outputs, count, seconds + 30, result, ready))
    reader.start()
    ready.wait(30)
    values = [m.value for m in synthetic_requests(min(count, 50_000), keys=1, seed=int(rate))]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started = time.monotonic()
    for index in range(count):
        ahead = started + index / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        producer.produce(requests, values[index % len(values)], str(time.time_ns()).encode())
        if index % 100 == 0:
            producer.poll(0)
    producer.flush(10)
    latencies = result.get(timeout=seconds + 120)
    reader.join(10)
    warm = int(rate)  # drop the first second
    if len(latencies) < count:
        print(f"  ({count - len(latencies)} of {count} not received in time)")
    return np.array(latencies[warm:] if len(latencies) > warm else latencies)  # in arrival order


RELAY = "relay (2 hops, no scoring)"


def summary(latencies: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1), "max_ms": round(float(latencies.max()), 1)}


def relay_row(tmp: str, rate: float, seconds: float) -> dict[str, float]:
    with embedded_stack() as state:
        bootstrap = state.kafka_bootstrap
        topics = fresh_topics(bootstrap, 8, "requests", "out")
        relay = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "relay.py"), bootstrap, topics["requests"], topics["out"]],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=devstack._die_with_parent,
        )
        assert relay.stdout is not None and relay.stdout.readline().startswith("READY")
        try:
            return summary(measure(bootstrap, topics["requests"], [topics["out"]], rate, seconds))
        finally:
            relay.kill()


def worker_row(tmp: str, name: str, rate: float, seconds: float, before_code: str | None) -> dict[str, float]:
    engine, *options = name.removeprefix("before:").split("+")
    env = {"STREAMER_ENGINE": engine, "STREAMER_LOG_LEVEL": "INFO"}
    workdir = Path(tempfile.mkdtemp(dir=tmp))
    (workdir / "streamer.toml").write_text(row_config(options))
    if name.startswith("before:"):
        env["PYTHONPATH"] = before_code or ""
    with embedded_stack() as state:
        bootstrap = state.kafka_bootstrap
        topics = fresh_topics(bootstrap, 8, "requests", "predictions", "feedback", "dlq")
        worker, log_path = start_worker(bootstrap, topics, workdir, **env)
        try:
            wait_for_log(log_path, r"assigned partitions \[", worker)
            outputs = [topics["predictions"], topics["dlq"]]
            return summary(measure(bootstrap, topics["requests"], outputs, rate, seconds)) | batch_stats(log_path)
        finally:
            worker.terminate()
            worker.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,2000,5000")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--engines", default="faust,batch")
    parser.add_argument("--repeat", type=int, default=1, help="Run every row this many times, interleaved.")
    parser.add_argument("--before-code", default=None, help="Engines named 'before:ENGINE' run from this checkout.")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    # A fresh broker for every row: the embedded broker keeps everything in memory and slows down as earlier
    # rows fill it (measured: the relay's p50 at 2,000/s went from 36 ms on a fresh broker to 425 ms late in a run).
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for rate in (float(r) for r in args.rates.split(",")):
                row = runs.setdefault(f"{rate:.0f}/s", {})
                row.setdefault(RELAY, []).append(relay_row(tmp, rate, args.seconds))
                for name in args.engines.split(","):
                    figures = worker_row(tmp, name, rate, args.seconds, args.before_code)
                    row.setdefault(f"streamer {name}", []).append(figures)
    print(f"\n{args.repeat} run(s) each, a fresh broker per run; medians over runs (p99: range)")
    header = f"{'rate':>8} {'':30} {'p50 ms':>8} {'p99 ms':>8} {'p99 range':>15} {'x relay p99':>12}"
    print(header + f" {'rows/batch':>11} {'wait ms':>8}")
    for rate, rows in runs.items():
        relay_p99 = statistics.median(r["p99_ms"] for r in rows[RELAY])
        for name, figures in rows.items():
            p50 = statistics.median(f["p50_ms"] for f in figures)
            p99s = [f["p99_ms"] for f in figures]
            p99 = statistics.median(p99s)
            batch = statistics.median(f.get("mean_batch_rows", float("nan")) for f in figures)
            wait = statistics.median(f.get("mean_batch_wait_ms", float("nan")) for f in figures)
            spread = f"{min(p99s):.0f}-{max(p99s):.0f}"
            ratio = p99 / relay_p99
            print(f"{rate:>8} {name:30} {p50:8.1f} {p99:8.1f} {spread:>15} {ratio:12.2f} {batch:11.1f} {wait:8.2f}")
    record("latency", {"seconds": args.seconds, "runs": runs, "before": args.before_code})
    return 0


if __name__ == "__main__":
    sys.exit(main())
