"""The output reader of the latency bench: a ``read_committed`` consumer process of its own.

    read_outputs.py BOOTSTRAP TOPIC[,TOPIC...] COUNT OUT_FILE [--linger-s 30]

Assigned to the end of every partition of the topics (prints "READY" once there), it reads until COUNT outputs
came or none came for ``--linger-s`` after the first, and writes the latency of each (ms, arrival order) to
OUT_FILE as JSON: arrival (wall clock) minus the send time its ``id`` carries (``load.py``: the first member of
the request and of its prediction alike). ``isolation.level = read_committed`` and a 5 ms fetch wait, as a
client of the predictions topic reads. Outputs whose value does not start with such an id are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

PREFIX = b'{"id":"'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("topics")
    parser.add_argument("count", type=int)
    parser.add_argument("out")
    parser.add_argument("--linger-s", type=float, default=30.0)
    args = parser.parse_args()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "bench-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "isolation.level": "read_committed",
        }
    )
    assignment = []
    for topic in args.topics.split(","):
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        assignment += [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    consumer.assign(assignment)
    consumer.consume(num_messages=1, timeout=0.5)  # settle the assignment at the end of the topics
    print("READY", flush=True)
    latencies: list[float] = []
    quiet_since = None
    while len(latencies) < args.count:
        messages = consumer.consume(num_messages=1000, timeout=0.005)
        now_ms = time.time() * 1000
        for message in messages:
            value = message.value() if message.error() is None else None
            if value and value.startswith(PREFIX):
                end = value.find(b'"', len(PREFIX))
                if end > len(PREFIX) and value[len(PREFIX) : end].isdigit():
                    latencies.append(now_ms - int(value[len(PREFIX) : end]) / 1e6)
        if messages or not latencies:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > args.linger_s:
            break
    consumer.close()
    with open(args.out, "w") as file:
        json.dump(latencies, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
