"""The load generator of the benches: a producer process of its own, configured like a low-latency client.

    load.py BOOTSTRAP TOPIC COUNT [--rate R] [--keys 2000] [--seed 1]     -> prints "SENT <count> <seconds>"

Requests of the shipped model's features (``streamer.synthetic``) over ``--keys`` entity keys, produced with
``linger.ms = 5``, idempotence and ``acks = all`` -- what a client that cares about latency and exactly-once
runs. Each request's ``id`` is its send time in nanoseconds (wall clock), written first in the JSON object, so a
reader finds it in the first bytes of the request and of its prediction alike (``id`` leads the envelope) and
parses nothing. ``--rate``: requests per second, paced (default: as fast as the producer takes them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import Producer

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from streamer import synthetic

CLIENT = {"linger.ms": 5, "enable.idempotence": True, "acks": "all", "queue.buffering.max.messages": 1_000_000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = synthetic.transactions(min(args.count, 100_000), seed=args.seed)
    features = [json.dumps(synthetic.features_of(row), separators=(",", ":")).encode() for row in rows]
    keys = [b"card-%d" % (k % args.keys) for k in range(args.keys)]
    producer = Producer({"bootstrap.servers": args.bootstrap, **CLIENT})
    producer.list_topics(args.topic, timeout=30)  # metadata and connections before the first send
    produce, poll = producer.produce, producer.poll
    started = time.monotonic()
    for index in range(args.count):
        if args.rate:
            ahead = started + index / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        value = b'{"id":"%d","features":%s}' % (time.time_ns(), features[index % len(features)])
        while True:
            try:
                produce(args.topic, value, keys[(index * 7919) % len(keys)])
                break
            except BufferError:
                poll(0.01)
        if index % 64 == 0:
            poll(0)
    if producer.flush(120):
        raise SystemExit("requests still undelivered after 120 s")
    print(f"SENT {args.count} {time.monotonic() - started:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
