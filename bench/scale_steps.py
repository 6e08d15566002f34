"""Scale steps: rows/s of 1, 2 and 4 workers of one group over 8 partitions, and what each step costs.

    .venv/bin/python bench/scale_steps.py [--engine faust] [--count 600000] [--steps 1,2,4] [--window-s 20]

A backlog is preloaded (so that every phase measures capacity, not the producer); one worker starts; after a
steady window the next workers join the same group (1 -> 2 -> 4), each join a rebalance. Measured from outside,
by sampling the output topics' end offsets every 0.2 s:

- ``rows_per_s`` per worker count: outputs over a steady window that starts 5 s after the step settled;
- ``join_s``: from starting the new workers to their first assignment (imports, broker wait, model loading,
  group join: what a new pod costs before it helps);
- ``pause_s``: the longest stretch without any output during the step (the rebalance: every member revokes,
  drains and rejoins; eager protocol);
- at the end, per worker, resident memory and CPU seconds per wall second over the last window, and
  ``stop_s``: from SIGTERM to exit, with a backlog still there (the drain of the batches held, commit, leave).

The figures feed bench/autoscale.py (capacity per replica, pause per scale step) and deploy/kubernetes (the
grace period, resources). On a shared 2-core machine the workers compete for the same cores with the broker:
rows/s then stops growing with the worker count, which is the machine, not the scaling (say so with figures).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import embedded_stack, fresh_topics, preload, record, start_worker, wait_for_log
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

ASSIGNED = r"assigned partitions \["
SAMPLE_S = 0.2


class OutputCounter:
    """The sum of the output topics' end offsets, sampled on a thread: ``samples`` is [(monotonic, total)]."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._specs = {TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in range(partitions)}
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            futures = self._admin.list_offsets(self._specs, request_timeout=5)
            try:
                total = sum(f.result().offset for f in futures.values())
            except Exception:  # a slow answer on a loaded machine: skip this sample
                continue
            self.samples.append((time.monotonic(), total))
            self._stop.wait(SAMPLE_S)

    def total(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def rate(self, start: float, end: float) -> float:
        window = [(t, n) for t, n in self.samples if start <= t <= end]
        if len(window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = window[0], window[-1]
        return (n1 - n0) / (t1 - t0)

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time between two samples with the same total, within [start, end]."""
        window = [(t, n) for t, n in self.samples if start <= t <= end]
        longest, since = 0.0, None
        for (t_prev, n_prev), (t, n) in itertools.pairwise(window):
            if n == n_prev:
                since = t_prev if since is None else since
                longest = max(longest, t - since)
            else:
                since = None
        return longest


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="faust")
    parser.add_argument("--count", type=int, default=600_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--steps", default="1,2,4")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    group = f"bench-scale-{uuid.uuid4().hex[:6]}"
    phases: list[dict[str, float]] = []
    workers: list[tuple[object, Path]] = []
    with embedded_stack() as state, tempfile.TemporaryDirectory() as tmp:
        bootstrap = state.kafka_bootstrap
        topics = fresh_topics(bootstrap, args.partitions, "requests", "predictions", "feedback", "dlq")
        produced_rate = preload(bootstrap, topics["requests"], args.count)
        print(f"preloaded {args.count:,} requests at {produced_rate:,.0f}/s", flush=True)
        counter = OutputCounter(bootstrap, [topics["predictions"], topics["dlq"]], args.partitions)
        counter.start()
        env = {"STREAMER_ENGINE": args.engine, "STREAMER_GROUP_ID": group, "STREAMER_LOG_LEVEL": "INFO"}
        try:
            for target in steps:
                started = time.monotonic()
                new = []
                for index in range(len(workers), target):
                    new.append(start_worker(bootstrap, topics, Path(tmp) / f"worker-{index}", **env))
                for process, log_path in new:
                    wait_for_log(log_path, ASSIGNED, process, timeout_s=180)
                joined = time.monotonic()
                workers += new
                # the step is over once every member has taken its share and output flows again
                time.sleep(args.settle_s)
                window_start = time.monotonic()
                cpu_before = {p.pid: cpu_seconds(p.pid) for p, _ in workers}
                time.sleep(args.window_s)
                window_end = time.monotonic()
                cores = [(cpu_seconds(p.pid) - cpu_before[p.pid]) / (window_end - window_start) for p, _ in workers]
                rate = counter.rate(window_start, window_end)
                phase = {
                    "workers": target,
                    "rows_per_s": round(rate),
                    "rows_per_s_per_worker": round(rate / target),
                    "join_s": round(joined - started, 2),
                    "pause_s": round(counter.longest_pause(started, window_start), 2) if phases else None,
                    "cores_per_worker": round(sum(cores) / len(cores), 2),
                    "rss_mb_max": round(max(rss_mb(p.pid) for p, _ in workers), 1),
                    "outputs_at_end": counter.total(),
                }
                phases.append(phase)
                print(phase, flush=True)
                if counter.total() >= args.count:
                    print("the backlog ran out during this phase: raise --count", flush=True)
                    break
            stop_started = time.monotonic()
            for process, _ in workers:
                process.terminate()
            stop_s = []
            for process, log_path in workers:
                process.wait(120)
                stop_s.append(round(time.monotonic() - stop_started, 2))
                if process.returncode != 0:
                    print(f"{log_path}: exit {process.returncode}\n{log_path.read_text()[-2000:]}", flush=True)
            exit_codes = [process.returncode for process, _ in workers]
        finally:
            counter.stop()
            for process, _ in workers:
                if process.poll() is None:
                    process.kill()
    base = phases[0]["rows_per_s"] or 1
    print(f"\n{args.engine} engine, {args.partitions} partitions, {os.cpu_count()} cores, backlog {args.count:,}\n")
    header = ("workers", "rows/s", "per worker", "x 1 worker", "join s", "pause s", "cores")
    print("".join(f"{h:>{w}}" for h, w in zip(header, (8, 10, 12, 12, 8, 9, 7), strict=True)))
    for p in phases:
        pause = "-" if p["pause_s"] is None else f"{p['pause_s']:.2f}"
        print(
            f"{p['workers']:>8} {p['rows_per_s']:>9,} {p['rows_per_s_per_worker']:>11,} "
            f"{p['rows_per_s'] / base:>11.2f} {p['join_s']:>7.2f} {pause:>8} {p['cores_per_worker']:>6.2f}"
        )
    print(f"stop after SIGTERM (s, per worker): {stop_s}; exit codes {exit_codes}")
    record(
        "scale_steps",
        {
            "engine": args.engine,
            "partitions": args.partitions,
            "count": args.count,
            "window_s": args.window_s,
            "phases": phases,
            "stop_s": stop_s,
            "exit_codes": exit_codes,
            "note": "shared busy 2-core machine: workers, broker and sampler on the same cores",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
