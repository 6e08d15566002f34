"""Producing predictions: confluent-kafka's ``Producer.produce_batch`` (no headers) against the worker's per-message
``produce`` with the three ``streamer-source-*`` headers, in one process, on the embedded broker.

    .venv/bin/python bench/produce_batch.py [--count 200000] [--batch 256] [--rounds 5]

Both write the same prediction values and keys to the 8 partitions of a fresh topic, a batch of ``--batch``
records per partition at a time, as the worker's sink does (``adapters.kafka_producer``): idempotent, acks=all,
linger 5 ms, one delivery callback per batch -- on its last record -- and the producer's queue polled by a thread
of its own. ``per-message`` builds each record's headers (``core.headers.source_headers``) and calls ``produce``
per record; ``produce_batch`` builds one dict per record and calls ``produce_batch`` once per partition batch;
``per-message, no headers`` separates what the headers cost from what the call per record costs.
Measured per round and variant, alternating: records/s from the first produce to the last delivery report, and
the calling thread's CPU time per record (the Python cost the worker's loop would pay). Medians of the rounds;
ratios in the same run. Appends to ``bench/results/produce_batch.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable

import confluent_kafka
from common import embedded_stack, fresh_topics, record
from confluent_kafka import Producer

from streamer.core.headers import source_headers

PARTITIONS = 8


def producer(bootstrap: str) -> tuple[Producer, Callable[[], None]]:
    instance = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,
            "acks": "all",
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    running = [True]

    def poll() -> None:
        while running[0]:
            instance.poll(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    def stop() -> None:
        running[0] = False
        thread.join()

    return instance, stop


def batches(count: int, size: int) -> list[tuple[int, list[int], list[bytes], list[bytes]]]:
    """(partition, source offsets, keys, values) batches of prediction-like records, round robin."""
    out = []
    offset = 0
    for start in range(0, count, size):
        n = min(size, count - start)
        partition = (start // size) % PARTITIONS
        offsets = list(range(offset, offset + n))
        keys = [b"card-%d" % (o % 2000) for o in offsets]
        values = [
            b'{"id":"r-1-%d","model":"fraud","version":"1","score":0.0123456789,"label":0,"outputs":{"label":0,'
            b'"probabilities":[0.9876543211,0.0123456789]},"source":{"topic":"requests","partition":%d,"offset":%d},'
            b'"latency_ms":4.125}' % (o, partition, o)
            for o in offsets
        ]
        out.append((partition, offsets, keys, values))
        offset += n
    return out


def per_message(instance: Producer, topic: str, work: list, done: Callable[..., None]) -> None:
    produce = instance.produce
    for partition, offsets, keys, values in work:
        headers = source_headers("requests", partition, offsets)
        last = len(values) - 1
        for i in range(last):
            produce(topic, values[i], keys[i], partition, headers=headers[i])
        produce(topic, values[last], keys[last], partition, headers=headers[last], on_delivery=done)


def per_message_bare(instance: Producer, topic: str, work: list, done: Callable[..., None]) -> None:
    """Per-message ``produce`` without headers: what the headers cost, apart from the call per record."""
    produce = instance.produce
    for partition, _, keys, values in work:
        last = len(values) - 1
        for i in range(last):
            produce(topic, values[i], keys[i], partition)
        produce(topic, values[last], keys[last], partition, on_delivery=done)


def in_batches(instance: Producer, topic: str, work: list, done: Callable[..., None]) -> None:
    produce_batch = instance.produce_batch
    for partition, _, keys, values in work:
        messages = [{"value": v, "key": k} for v, k in zip(values, keys, strict=True)]
        messages[-1]["callback"] = done
        produce_batch(topic, messages, partition=partition)


def run(bootstrap: str, variant: Callable[..., None], work: list) -> tuple[float, float]:
    """(records/s to the last delivery report, calling thread's CPU µs per record)."""
    topic = fresh_topics(bootstrap, PARTITIONS, "out")["out"]
    instance, stop = producer(bootstrap)
    instance.list_topics(topic, timeout=10)  # metadata and connections before the clock starts
    remaining = [len(work)]
    finished = threading.Event()

    def done(error: object, _message: object) -> None:
        if error is not None:
            raise SystemExit(f"delivery failed: {error}")
        remaining[0] -= 1
        if remaining[0] == 0:
            finished.set()

    count = sum(len(values) for _, _, _, values in work)
    started, cpu = time.perf_counter(), time.thread_time()
    variant(instance, topic, work, done)
    cpu = time.thread_time() - cpu
    if not finished.wait(300):
        raise SystemExit("deliveries did not finish in 300 s")
    elapsed = time.perf_counter() - started
    stop()
    instance.flush(30)
    return count / elapsed, cpu / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = batches(args.count, args.batch)
    variants = {
        "per-message produce, headers": per_message,
        "per-message produce, no headers": per_message_bare,
        "produce_batch, no headers": in_batches,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with embedded_stack() as state:
        for _ in range(args.rounds):
            for name, variant in variants.items():
                rate, micros = run(state.kafka_bootstrap, variant, work)
                rates[name].append(rate)
                cpu[name].append(micros)
    base = "per-message produce, headers"
    print(f"\nconfluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]}), ", end="")
    print(f"{args.count:,} records, {args.batch} per batch, {args.rounds} alternating rounds, medians\n")
    print(f"{'':32} {'records/s':>10} {'min-max':>17} {'x':>6} {'CPU µs/record':>14} {'x':>6}")
    for name in variants:
        rate, micros = statistics.median(rates[name]), statistics.median(cpu[name])
        rate_ratio = rate / statistics.median(rates[base])
        cpu_ratio = statistics.median(cpu[base]) / micros
        spread = f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}"
        print(f"{name:32} {rate:10,.0f} {spread:>17} {rate_ratio:6.2f} {micros:14.2f} {cpu_ratio:6.2f}")
    record(
        "produce_batch",
        {
            "confluent_kafka": confluent_kafka.version(),
            "librdkafka": confluent_kafka.libversion()[0],
            "count": args.count,
            "batch": args.batch,
            "rates": rates,
            "cpu_us_per_record": cpu,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
