"""Throughput: N pre-loaded requests over 8 partitions, one worker, against two baselines in the same run.

    .venv/bin/python bench/throughput.py [--count 200000] [--engines faust] [--online] [--no-baselines]

Rows: each streamer engine (scoring, reorder, exactly-once read-back, dead letters on); a bare Faust agent
that only counts events (the ceiling of anything built on Faust); a plain confluent-kafka
consume -> produce -> commit passthrough in Python (the ceiling of a Python relay). The rate is requests over
the time from the consumer being assigned to the last output read back. ``--online`` adds, per engine, a row with
Redis configured (every prediction logged for the join; the trees model) and one scoring with the online model
(``fraud-online``: logged with its features, weights refreshed every second) -- the cost of the learning side on
the scoring path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    count_until,
    embedded_stack,
    fresh_topics,
    preload,
    record,
    start_worker,
    wait_for_log,
)

from streamer.adapters import devstack


def online_models(workdir: Path) -> Path:
    models = workdir / "online-models"
    if not models.exists():
        shutil.copytree(ROOT / "models" / "fraud", models / "fraud")
        shutil.copytree(ROOT / "examples" / "models" / "fraud-online", models / "fraud-online")
    return models


def run_engine(
    bootstrap: str,
    engine: str,
    count: int,
    partitions: int,
    workdir: Path,
    redis_url: str | None = None,
    model: str = "fraud-online",
) -> float:
    topics = fresh_topics(bootstrap, partitions, "requests", "predictions", "feedback", "dlq")
    preload(bootstrap, topics["requests"], count)
    env = {"STREAMER_ENGINE": engine, "STREAMER_LOG_LEVEL": "INFO"}
    if redis_url is not None:
        env |= {
            "STREAMER_REDIS_URL": redis_url,
            "STREAMER_MODELS_DIR": str(online_models(workdir)),
            "STREAMER_DEFAULT_MODEL": model,
        }
    process, log_path = start_worker(bootstrap, topics, workdir / f"{engine}-{redis_url is not None}-{model}", **env)
    try:
        wait_for_log(log_path, r"assigned partitions \[", process)
        started = time.monotonic()
        seen, last = count_until(bootstrap, [topics["predictions"], topics["dlq"]], count, timeout_s=600)
        if seen < count or last is None:
            raise SystemExit(f"{engine}: only {seen} of {count} outputs")
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
    parser.add_argument("--engines", default="faust")
    parser.add_argument("--online", action="store_true", help="Also score with the online model (Redis on).")
    parser.add_argument("--no-baselines", action="store_true", help="Skip the bare Faust and passthrough rows.")
    args = parser.parse_args()
    rows: dict[str, float] = {}
    with embedded_stack() as state, tempfile.TemporaryDirectory() as tmp:
        bootstrap = state.kafka_bootstrap
        for engine in args.engines.split(","):
            rows[f"streamer --engine {engine}"] = run_engine(bootstrap, engine, args.count, args.partitions, Path(tmp))
            if args.online:
                rows[f"streamer --engine {engine}, Redis on"] = run_engine(
                    bootstrap, engine, args.count, args.partitions, Path(tmp), state.redis_url, "fraud"
                )
                rows[f"streamer --engine {engine}, online"] = run_engine(
                    bootstrap, engine, args.count, args.partitions, Path(tmp), state.redis_url
                )
        if not args.no_baselines:
            rows["bare Faust agent (count only)"] = run_helper(
                bootstrap, "bare_faust_agent.py", args.count, args.partitions, Path(tmp) / "faust"
            )
            rows["confluent-kafka passthrough"] = run_helper(
                bootstrap, "passthrough.py", args.count, args.partitions, Path(tmp) / "passthrough"
            )
    bare = rows.get("bare Faust agent (count only)", float("nan"))
    passthrough = rows.get("confluent-kafka passthrough", float("nan"))
    print(f"\n{args.count} requests, {args.partitions} partitions, {os.cpu_count()} cores\n")
    print(f"{'':38} {'rows/s':>10} {'x bare Faust':>13} {'x passthrough':>14}")
    for name, rate in rows.items():
        print(f"{name:38} {rate:10,.0f} {rate / bare:13.2f} {rate / passthrough:14.2f}")
    record("throughput", {"count": args.count, "partitions": args.partitions, "rates": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
