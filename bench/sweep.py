"""Batch-size / wait sweep: throughput under a backlog and latency at a fixed rate, per setting.

    .venv/bin/python bench/sweep.py [--engine batch] [--sizes 32,256,1024] [--waits 2,5,20]

The defaults of ``worker.batch_max_size`` and ``worker.batch_max_wait_ms`` were chosen from this table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import count_until, embedded_stack, fresh_topics, preload, record, start_worker, wait_for_log
from latency import measure, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="batch")
    parser.add_argument("--sizes", default="32,256,1024")
    parser.add_argument("--waits", default="2,5,20")
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=4)
    args = parser.parse_args()
    rows = []
    with embedded_stack() as state, tempfile.TemporaryDirectory() as tmp:
        bootstrap = state.kafka_bootstrap
        for size in (int(s) for s in args.sizes.split(",")):
            for wait in (float(w) for w in args.waits.split(",")):
                env = {
                    "STREAMER_ENGINE": args.engine,
                    "STREAMER_BATCH_MAX_SIZE": str(size),
                    "STREAMER_BATCH_MAX_WAIT_MS": str(wait),
                    "STREAMER_LOG_LEVEL": "INFO",
                }
                topics = fresh_topics(bootstrap, 8, "requests", "predictions", "feedback", "dlq")
                preload(bootstrap, topics["requests"], args.count)
                worker, log_path = start_worker(bootstrap, topics, Path(tmp) / f"t-{size}-{wait}", **env)
                wait_for_log(log_path, r"assigned partitions \[", worker)
                import time

                started = time.monotonic()
                seen, last = count_until(bootstrap, [topics["predictions"], topics["dlq"]], args.count, 600)
                throughput = seen / ((last or time.monotonic()) - started)
                latency = summary(
                    measure(
                        bootstrap, topics["requests"], [topics["predictions"], topics["dlq"]], args.rate, args.seconds
                    )
                )
                worker.terminate()
                worker.wait(60)
                rows.append({"size": size, "wait_ms": wait, "throughput": round(throughput), **latency})
                print(
                    f"size {size:5} wait {wait:5.1f} ms: {throughput:8,.0f} rows/s   at {args.rate:.0f}/s "
                    f"p50 {latency['p50_ms']:6.1f} ms  p99 {latency['p99_ms']:6.1f} ms",
                    flush=True,
                )
    record("sweep", {"engine": args.engine, "rate": args.rate, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
