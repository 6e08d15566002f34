"""Throughput: N pre-loaded requests over 8 partitions, one worker, against baselines in the same run.

    .venv/bin/python bench/throughput.py [--count 200000] [--rows batch,batch+redis,batch+tx,faust]
        [--baselines passthrough,faust-relay,bare-faust] [--before-code DIR --rows before:batch,batch]

Rows (``--rows``, comma-separated): ``batch`` / ``faust`` -- the engine with scoring, reorder, exactly-once
read-back and dead letters on, no Redis; options joined with ``+``: ``redis`` -- Redis configured (every
prediction logged for the label join); ``tx`` -- ``kafka.transactional = true`` (batch only); ``online`` --
scoring the online model (``fraud-online``: logged with its features, weights refreshed every second);
``threads=N`` -- ``worker.scoring_threads = N``; ``kafka.KEY=VALUE`` -- any ``[kafka]`` setting.

Baselines: a plain confluent-kafka consume -> produce -> commit passthrough in Python (the ceiling of a Python
relay); a Faust agent relaying each event with a confluent-kafka producer as a user would write it
(``faust_relay.py``: the Faust engine's yardstick); a bare Faust agent that only counts. The rate is requests
over the time from the consumer being assigned to the last output read back. A row named ``before:ROW`` runs the
worker from the checkout ``--before-code DIR`` (``git worktree add DIR COMMIT``): before/after figures in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    preload,
    record,
    row_config,
    start_worker,
    wait_for_log,
)

from streamer.adapters import devstack

BATCHES: dict[str, list[dict[str, float]]] = {}  # row -> the worker's batch statistics per run

BASELINES = {
    "passthrough": ("confluent-kafka passthrough", "passthrough.py"),
    "faust-relay": ("Faust relay (user-written)", "faust_relay.py"),
    "bare-faust": ("bare Faust agent (count only)", "bare_faust_agent.py"),
}


def online_models(workdir: Path) -> Path:
    models = workdir / "online-models"
    if not models.exists():
        shutil.copytree(ROOT / "models" / "fraud", models / "fraud")
        shutil.copytree(ROOT / "examples" / "models" / "fraud-online", models / "fraud-online")
    return models


def run_engine(
    bootstrap: str, row: str, count: int, partitions: int, workdir: Path, redis_url: str, worker_code: str | None
) -> float:
    if row.startswith("before:"):
        row = row.removeprefix("before:")
    else:
        worker_code = None
    engine, *options = row.split("+")
    topics = fresh_topics(bootstrap, partitions, "requests", "predictions", "feedback", "dlq")
    preload(bootstrap, topics["requests"], count)
    env = {"STREAMER_ENGINE": engine, "STREAMER_LOG_LEVEL": "INFO"}
    if "redis" in options or "online" in options:
        env |= {
            "STREAMER_REDIS_URL": redis_url,
            "STREAMER_MODELS_DIR": str(online_models(workdir)),
            "STREAMER_DEFAULT_MODEL": "fraud-online" if "online" in options else "fraud",
        }
    if worker_code:
        env["PYTHONPATH"] = worker_code
    rundir = workdir / row.replace("+", "-").replace("=", "-")
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "streamer.toml").write_text(row_config(options))
    process, log_path = start_worker(bootstrap, topics, rundir, **env)
    try:
        wait_for_log(log_path, r"assigned partitions \[", process)
        started = time.monotonic()
        seen, last = count_until(bootstrap, [topics["predictions"], topics["dlq"]], count, timeout_s=600)
        if seen < count or last is None:
            raise SystemExit(f"{row}: only {seen} of {count} outputs")
        BATCHES.setdefault(row, []).append(batch_stats(log_path))
        return count / (last - started)
    finally:
        process.terminate()
        process.wait(60)


def run_helper(bootstrap: str, script: str, count: int, partitions: int, workdir: Path) -> float:
    topics = fresh_topics(bootstrap, partitions, "requests", "out")
    preload(bootstrap, topics["requests"], count)
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
    parser.add_argument("--rows", default="batch,batch+redis,batch+tx,faust")
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
    record(
        "throughput",
        {
            "count": args.count,
            "partitions": args.partitions,
            "runs": runs,
            "batches": BATCHES,
            "before": args.before_code,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
