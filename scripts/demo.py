"""`make demo`: the main job end to end on the embedded stack.

Starts the embedded broker and redis-server, creates the topics, starts one `streamer worker`, sends a few
thousand synthetic card transactions over many keys (with a sprinkle of broken messages), consumes the
predictions and dead letters with a progress bar, prints a summary (count, rate, p50/p99 latency, dead letters
by reason) and one frame of ``streamer top`` on the worker's metrics. Then the concept-drift act
(``demo_drift.py``): the rule changes halfway, labels flow back, and the frozen and online models' accuracy is
shown live and saved as ``.streamer/demo/drift.png``. Everything is stopped at the end -- also on Ctrl-C or an
error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.adapters.kafka_console import produce_requests
from streamer.core.types import OutgoingMessage
from streamer.synthetic import synthetic_requests

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def broken_requests(count: int) -> list[OutgoingMessage]:
    kinds = [
        b"this is not json",
        b'{"features": {"amount": "a lot"}}',
        b'{"model": "no-such-model", "features": {"amount": 1}}',
        b'{"features": {"amount": 1e999, "hour": 1, "merchant_risk": 0, "distance_km": 0, "velocity_1h": 0, '
        b'"account_age_days": 1}}',
    ]
    return [OutgoingMessage(f"card-bad-{i}".encode(), kinds[i % len(kinds)]) for i in range(count)]


def interleave(good: list[OutgoingMessage], bad: list[OutgoingMessage]) -> list[OutgoingMessage]:
    step = max(len(good) // max(len(bad), 1), 1)
    out: list[OutgoingMessage] = []
    for index, message in enumerate(good):
        out.append(message)
        if index % step == step - 1 and bad:
            out.append(bad.pop())
    return out + bad


def wait_for(pattern: str, log_path: Path, process: subprocess.Popen, timeout_s: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            raise SystemExit(f"the worker exited with {process.returncode}; log {log_path}")
        time.sleep(0.1)
    raise SystemExit(f"the worker did not get ready in {timeout_s:.0f} s; log {log_path}")


def demo_models(state_dir: Path) -> Path:
    """The shipped ``fraud`` model plus the examples (online, forest, derived) and the example graphs; ``fraud`` stays
    the default."""
    import shutil

    models = state_dir / "models"
    shutil.rmtree(models, ignore_errors=True)
    shutil.copytree(ROOT / "models" / "fraud", models / "fraud")
    for name in ("fraud-online", "fraud-forest", "fraud-derived"):
        shutil.copytree(ROOT / "examples" / "models" / name, models / name)
    graphs = state_dir / "graphs"  # beside models/: the worker serves the example graphs too
    shutil.rmtree(graphs, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "graphs", graphs)
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--engine", default=os.environ.get("STREAMER_ENGINE", "faust"), choices=("faust", "batch"))
    parser.add_argument("--no-drift", action="store_true", help="Skip the concept-drift act.")
    parser.add_argument("--no-graph", action="store_true", help="Skip the scoring-graph act.")
    parser.add_argument("--no-top", action="store_true", help="Skip the `streamer top --once` frame.")
    args = parser.parse_args()

    state_dir = ROOT / ".streamer" / "demo"
    console.rule("[bold]streamer demo")
    state, _ = devstack.up(state_dir)
    console.print(
        f"broker [cyan]{state.kafka_bootstrap}[/] (ready in {state.broker.startup_s:.2f} s), "
        f"redis [cyan]{state.redis_url}[/] (ready in {state.redis.startup_s:.2f} s)"
    )
    worker: subprocess.Popen | None = None
    try:
        topics = ("requests", "predictions", "feedback", "requests.dlq", "model-events")
        KafkaAdmin(state.kafka_bootstrap).create_topics(topics, args.partitions)
        console.print(f"topics {', '.join(topics)} with {args.partitions} partitions")
        settings = {
            "STREAMER_KAFKA_BOOTSTRAP": state.kafka_bootstrap,
            "STREAMER_REDIS_URL": state.redis_url,
            "STREAMER_MODELS_DIR": str(demo_models(state_dir)),
            "STREAMER_DEFAULT_MODEL": "fraud",
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_STATE_DIR": str(state_dir),
            "STREAMER_ENGINE": args.engine,
            "STREAMER_ONLINE_REFRESH_MS": "200",
        }
        log_path = state_dir / "logs" / "worker.log"
        worker = devstack.start_worker(state_dir, log_path, settings)
        started = time.monotonic()
        metrics_url = wait_for(r"metrics: (\S+)", log_path, worker, 60).group(1)
        wait_for(r"assigned partitions \[", log_path, worker, 60)
        console.print(
            f"worker ({args.engine} engine) up and assigned in {time.monotonic() - started:.1f} s; "
            f"metrics at {metrics_url}"
        )

        good = list(synthetic_requests(args.count, keys=args.keys, seed=int(time.time()) % 10_000))
        bad = broken_requests(max(args.count // 100, 4))
        messages = interleave(good, bad)
        total = len(messages)
        consumer = Consumer(
            {
                "bootstrap.servers": state.kafka_bootstrap,
                "group.id": "streamer-demo",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in ("predictions", "requests.dlq")
                for p in range(args.partitions)
            ]
        )
        import threading

        producing = threading.Thread(
            target=produce_requests, args=(state.kafka_bootstrap, {}, "requests", messages), kwargs={"rate": args.rate}
        )
        latencies: list[float] = []
        reasons: Counter[str] = Counter()
        keys: set[bytes] = set()
        first_at = None
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"scoring {total} requests at {args.rate:.0f}/s", total=total)
            producing.start()
            deadline = time.monotonic() + 60 + total / max(args.rate, 1)
            seen = 0
            while seen < total and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=2000, timeout=0.1):
                    if message.error():
                        continue
                    first_at = first_at or time.monotonic()
                    seen += 1
                    if message.topic() == "predictions":
                        latencies.append(json.loads(message.value())["latency_ms"])
                        keys.add(message.key())
                    else:
                        reasons[dict(message.headers())["streamer-error"].decode()] += 1
                progress.update(task, completed=seen)
            producing.join()
        consumer.close()
        elapsed = time.monotonic() - (first_at or time.monotonic())
        table = Table(title="demo summary", show_header=False)
        table.add_row("requests sent", str(total))
        table.add_row("predictions", f"{len(latencies)} over {len(keys)} keys")
        table.add_row("dead letters", ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "0")
        table.add_row(
            "outputs / requests", f"{seen} / {total}" + ("  [green]exactly one each" if seen == total else "")
        )
        table.add_row("rate", f"{seen / elapsed:,.0f} outputs/s (paced by the producer at {args.rate:,.0f}/s)")
        if latencies:
            p50, p99 = np.percentile(latencies, [50, 99])
            table.add_row(
                "latency (request timestamp -> produced)",
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms",
            )
        console.print(table)
        if seen != total:
            return 1
        if not args.no_top:
            from streamer.top import terminal as top

            console.rule("[bold]streamer top --once: the worker's /metrics")
            top.run([metrics_url], 1.0, True, console)
        if not args.no_drift:
            import demo_drift

            console.rule("[bold]act 2: concept drift")
            png = state_dir / "drift.png"
            accuracy = demo_drift.run(console, state.kafka_bootstrap, metrics_url, png)
            half = len(accuracy["fraud"]) // 2
            console.print(
                f"after the drift (last {half - 2} chunks): frozen {np.mean(accuracy['fraud'][half + 2 :]):.3f}, "
                f"online {np.mean(accuracy['fraud-online'][half + 2 :]):.3f}; plot saved to [cyan]{png}[/]"
            )
        if not args.no_graph:
            import demo_graph

            console.rule("[bold]act 3: a scoring graph (enrichment, two phases, business rules)")
            graph = demo_graph.run(console, state.kafka_bootstrap, state.redis_url)
            if graph["answered"] == 0:
                return 1
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(30)
                console.print(f"worker stopped (exit {code})")
            except subprocess.TimeoutExpired:
                worker.kill()
        devstack.down(state_dir)
        console.print("embedded stack stopped")


if __name__ == "__main__":
    sys.exit(main())
