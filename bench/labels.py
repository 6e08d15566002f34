"""Labels joined per second through the Redis state store, and Redis memory per logged prediction.

    .venv/bin/python bench/labels.py [--count 50000] [--batch 1000]

Predictions are logged as the worker logs them (columnar batches, one script call per batch); labels are applied
with one Lua call per batch (one round trip), against the embedded redis-server.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import embedded_stack, record

from streamer.adapters.redis_state import JOINED, LoggedBatch, RedisStateStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scores = rng.random(args.count)
    labels = (rng.random(args.count) < scores).astype(int)
    ids = [f"r-{i:08d}" for i in range(args.count)]
    with embedded_stack() as state:
        store = RedisStateStore.from_url(state.redis_url)
        client = store._redis
        before = client.info("memory")["used_memory"]
        started = time.perf_counter()
        for start in range(0, args.count, args.batch):
            stop = start + args.batch
            store.log_batches(
                [LoggedBatch("fraud", "1", 0.5, time.time(), ids[start:stop], scores[start:stop].tolist())]
            )
        log_rate = args.count / (time.perf_counter() - started)
        per_prediction = (client.info("memory")["used_memory"] - before) / args.count
        sample = len(client.keys(f"{store.prefix}:predlog:*"))
        started = time.perf_counter()
        joined = 0
        for start in range(0, args.count, args.batch):
            batch = [
                (request_id, int(y))
                for request_id, y in zip(
                    ids[start : start + args.batch], labels[start : start + args.batch], strict=True
                )
            ]
            joined += sum(code == JOINED for code in store.apply_labels(batch, time.time()))
        label_rate = args.count / (time.perf_counter() - started)
    print(
        f"logged {args.count} predictions at {log_rate:,.0f}/s; {per_prediction:.0f} bytes each (used_memory delta), "
        f"in {sample} day-and-shard hashes"
    )
    print(f"joined {joined} labels at {label_rate:,.0f}/s in batches of {args.batch} (one Lua call each)")
    record(
        "labels",
        {
            "count": args.count,
            "batch": args.batch,
            "log_rate": round(log_rate),
            "label_rate": round(label_rate),
            "bytes_per_prediction": round(per_prediction),
            "hashes": sample,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
