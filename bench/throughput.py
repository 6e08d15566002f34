"""Throughput: N pre-loaded requests over 8 partitions, one worker as users run it, against baselines in the same
run.

    .venv/bin/python bench/throughput.py [--count 200000] [--rows batch+redis,batch,faust+redis]
        [--baselines passthrough,faust-relay,bare-faust] [--before-code DIR --rows before:batch+redis,batch+redis]

The worker is ``streamer worker`` started through its CLI (a process of its own), with its six topics, scoring,
reorder, exactly-once read-back and dead letters on; the requests (over 2,000 keys) are pre-loaded by the load
generator process (``load.py``: linger 5 ms, idempotent, acks=all) and the outputs read back by a
``read_committed`` consumer. The rate is requests over the time from the worker's assignment to the last output
read back.

Rows (``--rows``, comma-separated): ``batch`` / ``faust`` -- the engine, no Redis; options joined with ``+``:
``redis`` -- Redis configured (the embedded redis-server: every background service runs, every prediction is
logged for the label join); ``tx`` -- ``kafka.transactional = true`` (batch only); ``online`` -- scoring the
online model (``fraud-online``: logged with its features, weights refreshed every second); ``threads=N`` --
``worker.scoring_threads = N``; ``kafka.KEY=VALUE`` -- any ``[kafka]`` setting.

Baselines: a plain confluent-kafka consume -> produce -> commit passthrough in Python (the ceiling of a Python
relay: the batch engine's yardstick); a Faust agent relaying each event with a confluent-kafka producer as a user
would write it (``faust_relay.py``: ``take_events(1000, within=0.05)``, the Faust engine's yardstick); a bare
Faust agent that only counts. A row named ``before:ROW`` runs the worker from the checkout ``--before-code DIR``
(``git worktree add DIR COMMIT``): before/after figures in one run. Every figure is also a ratio to each baseline
of the same run; ``batch+redis`` is also given against ``batch`` (what Redis costs). Appends to
``bench/results/throughput.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    batch_stats,
    count_until,
    embedded_stack,
    fresh_topics,
    preload_as_clients,
    record,
    row_config,
    user_worker,
    wait_for_log,
    worker_topics,
)

from streamer.adapters import devstack

BATCHES: dict[str, list[dict[str, float]]] = {}  # row -> the worker's batch statistics per run

BASELINES = {
    "passthrough": ("confluent-kafka passthrough", "passthrough.py"),
    "faust-relay": ("Faust relay (user-written)", "faust_relay.py"),
    "bare-faust": ("bare Faust agent (count only)", "bare_faust_agent.py"),
}


def run_engine(
    bootstrap: str, row: str, count: int, partitions: int, workdir: Path, redis_url: str, worker_code: str | None
) -> float:
    name = row
    if row.startswith("before:"):
        row = row.removeprefix("before:")
    else:
        worker_code = None
    engine, *options = row.split("+")
    topics = worker_topics(bootstrap, partitions)
    preload_as_clients(bootstrap, topics["requests"], count)
    env: dict[str, str] = {}
    redis = redis_url if "redis" in options or "online" in options else None
    if "online" in options:
        env["STREAMER_DEFAULT_MODEL"] = "fraud-online"
    rundir = workdir / name.replace("+", "-").replace("=", "-").replace(":", "-")
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "streamer.toml").write_text(row_config(options))
    process, log_path = user_worker(bootstrap, topics, rundir, engine, redis, worker_code, **env)
    try:
        wait_for_log(log_path, r"assigned partitions \[", process)
        started = time.monotonic()
        seen, last = count_until(bootstrap, [topics["predictions"], topics["dlq"]], count, timeout_s=600)
        if seen < count or last is None:
            raise SystemExit(f"{row}: only {seen} of {count} outputs")
        BATCHES.setdefault(name, []).append(batch_stats(log_path))
        return count / (last - started)
    finally:
        process.terminate()
        process.wait(60)


def run_helper(bootstrap: str, script: str, count: int, partitions: int, workdir: Path) -> float:
    topics = fresh_topics(bootstrap, partitions, "requests", "out")
    preload_as_clients(bootstrap, topics["requests"], count)
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), bootstrap, topics["requests"], topics["out"], str(count)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=devstack._die_with_parent,
    )
    for line in (result.stdout + result.stderr).splitlines():  # Faust routes prints through its logger
        if "RATE " in line:
            return float(line.split("RATE ")[1].split()[0])
    raise SystemExit(f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows", default="batch+redis,batch,faust+redis")
    parser.add_argument("--baselines", default="passthrough,faust-relay")
    parser.add_argument(
        "--repeat", type=int, default=1, help="Run every row and baseline this many times, interleaved."
    )
    parser.add_argument(
        "--before-code", default=None, help="Rows named 'before:ROW' run the worker from this checkout (PYTHONPATH)."
    )
    args = parser.parse_args()
    runs: dict[str, list[float]] = {}
    with embedded_stack() as state, tempfile.TemporaryDirectory() as tmp:
        bootstrap = state.kafka_bootstrap
        for _ in range(args.repeat):
            for row in [r for r in args.rows.split(",") if r]:
                rate = run_engine(
                    bootstrap, row, args.count, args.partitions, Path(tmp), state.redis_url, args.before_code
                )
                runs.setdefault(row, []).append(rate)
            for name in [b for b in args.baselines.split(",") if b]:
                label, script = BASELINES[name]
                rate = run_helper(bootstrap, script, args.count, args.partitions, Path(tmp) / name)
                runs.setdefault(label, []).append(rate)
    rows = {name: statistics.median(rates) for name, rates in runs.items()}
    print(f"\n{args.count} requests, {args.partitions} partitions, {os.cpu_count()} cores, {args.repeat} run(s) each")
    print("rows/s is the median; x columns are ratios of medians\n")
    columns = [label for label, _ in BASELINES.values() if label in rows]
    print(f"{'':40} {'rows/s':>10} {'min-max':>17}" + "".join(f" {'x ' + c[:18]:>21}" for c in columns))
    for name, rate in rows.items():
        spread = f"{min(runs[name]):,.0f}-{max(runs[name]):,.0f}"
        print(f"{name:40} {rate:10,.0f} {spread:>17}" + "".join(f" {rate / rows[c]:21.2f}" for c in columns))
    for name, stats in BATCHES.items():
        if stats and stats[-1]:
            print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in stats[-1].items()))
    ratios = {name: {c: round(rate / rows[c], 2) for c in columns} for name, rate in rows.items()}
    for name in rows:
        plain = name.replace("+redis", "")
        if "+redis" in name and plain in rows:
            ratios[name]["same row without Redis"] = round(rows[name] / rows[plain], 2)
            print(f"  {name} / {plain}: {rows[name] / rows[plain]:.2f} (what Redis costs)")
    record(
        "throughput",
        {
            "count": args.count,
            "partitions": args.partitions,
            "setup": "CLI worker, 8 partitions, 2000 keys, load.py preload, read_committed",
            "runs": runs,
            "ratios": ratios,
            "batches": BATCHES,
            "before": args.before_code,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
