"""End-to-end latency at fixed request rates, measured from outside the worker, against a raw two-hop relay over
the same broker in the same run.

    .venv/bin/python bench/latency.py [--rates 500,2000] [--seconds 8] [--engines faust,batch] [--repeat 1]
        [--before-code DIR --engines before:faust,faust]

What users run: ``streamer worker`` started through its CLI (a process of its own), 8 request partitions,
requests over 2,000 keys, Redis configured (the embedded redis-server) so that every background service runs
(the prediction log, the label consumer, online refresh, the control channel, concept drift; models watched; the
topic watch and the watchdog), all six of its topics present. Requests come from a load generator process of
their own (``load.py``: linger 5 ms, idempotent, acks=all), outputs are read by a ``read_committed`` consumer
process (``read_outputs.py``, fetch wait 5 ms). Latency is what that client sees: from a request's send time
(carried in its id) to its prediction's arrival; the first second of each run is dropped as warm-up.

The relay (``relay.py``: consume -> produce with the same client settings, no scoring) is the floor: the same
two broker hops with nothing in between, measured the same way. Each row gets a fresh embedded broker and
redis-server (a long-lived embedded broker slows down as it fills). An engine named ``before:ENGINE`` runs the
worker from the checkout ``--before-code DIR`` (``git worktree add DIR COMMIT``); ``ENGINE+noredis`` runs it
without Redis; ``ENGINE+threads=N`` or ``+kafka.KEY=VALUE`` set ``[worker] scoring_threads`` or a ``[kafka]``
setting. Every figure is also a ratio to the relay of the same rate and run. Appends to
``bench/results/latency.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import (
    ROOT,
    batch_stats,
    embedded_stack,
    fresh_topics,
    load,
    record,
    row_config,
    user_worker,
    wait_for_log,
    worker_topics,
)

from streamer.adapters import devstack
from streamer.core.stages import STAGES

RELAY = "relay (2 hops, no scoring)"


def measure(
    bootstrap: str, requests: str, outputs: list[str], rate: float, seconds: float, workdir: Path
) -> np.ndarray:
    """Send at ``rate`` for ``seconds`` from the load generator; the latencies (ms) after the first second."""
    count = int(rate * seconds)
    result = workdir / f"latencies-{rate:.0f}.json"
    arguments = [bootstrap, ",".join(outputs), str(count), str(result), "--linger-s", "20"]
    reader = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "read_outputs.py"), *arguments],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=devstack._die_with_parent,
    )
    assert reader.stdout is not None and reader.stdout.readline().startswith("READY")
    sender = load(bootstrap, requests, count, rate=rate, seed=int(rate))
    sender.communicate(timeout=seconds + 180)
    reader.wait(timeout=seconds + 240)
    latencies = json.loads(result.read_text())
    if len(latencies) < count:
        print(f"  ({count - len(latencies)} of {count} not received in time)")
    warm = int(rate)  # the first second
    return np.array(latencies[warm:] if len(latencies) > warm else latencies)


def summary(latencies: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1), "max_ms": round(float(latencies.max()), 1)}


def relay_row(workdir: Path, rate: float, seconds: float) -> dict[str, float]:
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
            return summary(measure(bootstrap, topics["requests"], [topics["out"]], rate, seconds, workdir))
        finally:
            relay.kill()
            relay.wait()


def worker_row(workdir: Path, name: str, rate: float, seconds: float, before_code: str | None) -> dict[str, float]:
    engine, *options = name.removeprefix("before:").split("+")
    rundir = Path(tempfile.mkdtemp(dir=workdir))
    (rundir / "streamer.toml").write_text(row_config(options))
    code = before_code if name.startswith("before:") else None
    with embedded_stack() as state:
        bootstrap = state.kafka_bootstrap
        topics = worker_topics(bootstrap, 8)
        redis = None if "noredis" in options else state.redis_url
        worker, log_path = user_worker(bootstrap, topics, rundir, engine, redis, code)
        try:
            wait_for_log(log_path, r"assigned partitions \[", worker, timeout_s=120)
            outputs = [topics["predictions"], topics["dlq"]]
            figures = summary(measure(bootstrap, topics["requests"], outputs, rate, seconds, rundir))
            return figures | batch_stats(log_path)
        finally:
            worker.terminate()
            worker.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,2000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--engines", default="faust,batch")
    parser.add_argument("--repeat", type=int, default=1, help="Run every row this many times, interleaved.")
    parser.add_argument("--before-code", default=None, help="Engines named 'before:ENGINE' run from this checkout.")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for _ in range(args.repeat):
            for rate in (float(r) for r in args.rates.split(",")):
                row = runs.setdefault(f"{rate:.0f}/s", {})
                row.setdefault(RELAY, []).append(relay_row(workdir, rate, args.seconds))
                for name in [e for e in args.engines.split(",") if e]:
                    figures = worker_row(workdir, name, rate, args.seconds, args.before_code)
                    row.setdefault(f"streamer {name}", []).append(figures)
    print(f"\n{args.repeat} run(s) each, a fresh broker per run; medians over runs (p99: range)")
    header = f"{'rate':>8} {'':30} {'p50 ms':>8} {'p99 ms':>8} {'p99 range':>15} {'x relay p99':>12}"
    print(header + f" {'p50 - relay':>12} {'rows/batch':>11} {'wait ms':>8}")
    ratios: dict[str, dict[str, float]] = {}
    for rate, rows in runs.items():
        relay_p50 = statistics.median(r["p50_ms"] for r in rows[RELAY])
        relay_p99 = statistics.median(r["p99_ms"] for r in rows[RELAY])
        for name, figures in rows.items():
            p50 = statistics.median(f["p50_ms"] for f in figures)
            p99s = [f["p99_ms"] for f in figures]
            p99 = statistics.median(p99s)
            batch = statistics.median(f.get("mean_batch_rows", float("nan")) for f in figures)
            wait = statistics.median(f.get("mean_batch_wait_ms", float("nan")) for f in figures)
            spread = f"{min(p99s):.0f}-{max(p99s):.0f}"
            ratio = p99 / relay_p99
            ratios.setdefault(rate, {})[name] = round(ratio, 2)
            print(
                f"{rate:>8} {name:30} {p50:8.1f} {p99:8.1f} {spread:>15} {ratio:12.2f} {p50 - relay_p50:12.1f}"
                f" {batch:11.1f} {wait:8.2f}"
            )
    print("\nwhere the time goes, per stage of the data path (a sampled request per batch; mean / p99 ms, medians)")
    print(f"{'rate':>8} {'':30} " + " ".join(f"{stage:>13}" for stage in (*STAGES, "loop lag")))
    for rate, rows in runs.items():
        for name, figures in rows.items():
            cells = []
            for stage in (*STAGES, "loop_lag"):
                means = [f[f"{stage}_mean_ms"] for f in figures if f"{stage}_mean_ms" in f]
                p99s = [f[f"{stage}_p99_ms"] for f in figures if f"{stage}_p99_ms" in f]
                cells.append(f"{statistics.median(means):.1f}/{statistics.median(p99s):.1f}" if means else "")
            if any(cells):
                print(f"{rate:>8} {name:30} " + " ".join(f"{cell:>13}" for cell in cells))
    record(
        "latency",
        {
            "seconds": args.seconds,
            "setup": "CLI worker, 8 partitions, 2000 keys, Redis and every service on, load.py, read_committed",
            "runs": runs,
            "p99_x_relay": ratios,
            "before": args.before_code,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
