"""`make demo`: the main job end to end on the embedded stack, in three acts, every step a `streamer` command.

Each command is printed before it runs (``demo_shell.py``), with the settings it runs with printed once as an
``export`` line, so that any step can be replayed by hand; the files the demo sends (requests, labels, entity
features) stay under ``.streamer/demo/``. The demo only writes those files, reads what the commands print and
the worker's public ``/ready`` and ``/metrics`` endpoints.

1. Scoring: the embedded broker and redis-server, the topics, one ``streamer worker``; a few thousand synthetic
   card transactions over many keys with a sprinkle of broken messages, both streams of outputs read back with
   ``streamer consume``; a summary (count, rate, p50/p99 latency, dead letters by reason, exactly one output per
   request) and one frame of ``streamer top``.
2. Concept drift (``demo_drift.py``): the rule changes halfway, labels flow back with ``streamer label``, and the
   frozen and online models' accuracy is shown live and saved as ``.streamer/demo/drift.png``.
3. A scoring graph (``demo_graph.py``): account features loaded with ``streamer features load``, transactions
   through enrichment, two phases and business rules.

Everything is stopped at the end -- also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from demo_shell import DemoFailed, Shell, Stream
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".streamer" / "demo"
console = Console()

# Requests a worker cannot score, one of each reason a client can cause (sent as written: NaN is not JSON).
BROKEN = [
    '{{"id": "bad-{i}", "features": {{"amount": NaN}}}}',
    '{{"id": "bad-{i}", "features": {{"amount": "a lot"}}}}',
    '{{"id": "bad-{i}", "model": "no-such-model", "features": {{"amount": 1}}}}',
    '{{"id": "bad-{i}", "features": {{"amount": 1e999, "hour": 1, "merchant_risk": 0, "distance_km": 0, '
    '"velocity_1h": 0, "account_age_days": 1}}}}',
]


def settings(engine: str) -> dict[str, str]:
    """The demo's settings: its own state directory; the example models and graphs with `fraud` the default model
    for requests that name none; a free metrics port (printed by the worker); online weights refreshed every
    200 ms, so that the drift act's next chunk is scored by what the labels taught."""
    return {
        "STREAMER_STATE_DIR": str(STATE.relative_to(ROOT)),
        "STREAMER_MODELS_DIR": "examples/models",
        "STREAMER_DEFAULT_MODEL": "fraud",
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_ONLINE_REFRESH_MS": "200",
        "STREAMER_ENGINE": engine,
    }


def metrics_url_of(worker, timeout_s: float) -> str:  # type: ignore[no-untyped-def]
    """The line ``metrics: URL`` the worker prints on its stdout at start."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in worker.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise DemoFailed(f"the worker exited with {worker.returncode}; its log: {STATE / 'logs' / 'worker.log'}")
        try:
            match = re.match(r"metrics: (\S+)", lines.get(timeout=0.2))
        except queue.Empty:
            continue
        if match:
            return match.group(1)
    raise DemoFailed(f"the worker printed no metrics address in {timeout_s:.0f} s")


def wait_ready(ready_url: str, worker, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    console.print(f"[dim]waiting for the worker: GET {ready_url} answers 200 once it has partitions and models[/]")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise DemoFailed(f"the worker exited with {worker.returncode}; its log: {STATE / 'logs' / 'worker.log'}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise DemoFailed(f"the worker was not ready in {timeout_s:.0f} s; its log: {STATE / 'logs' / 'worker.log'}")


def act_scoring(shell: Shell, args: argparse.Namespace, metrics_url: str) -> bool:
    good, bad = args.count, max(args.count // 100, 4)
    broken = STATE / "broken.jsonl"
    broken.write_text("".join(BROKEN[i % len(BROKEN)].format(i=i) + "\n" for i in range(bad)))
    console.print(
        f"[dim]wrote {broken.relative_to(ROOT)}: {bad} requests no model can score (not JSON, a string "
        "amount, an unknown model, 1e999)[/]"
    )
    predictions = shell.stream("--meta", "--count", str(good), "--timeout", "60", note="every prediction, as JSON")
    dead = shell.stream(
        "--topic", "requests.dlq", "--meta", "--count", str(bad), "--timeout", "60", note="every dead letter"
    )
    rate_bad = max(bad * args.rate / good, 1.0)
    producers = [
        shell.start("produce", "--count", str(good), "--rate", f"{args.rate:g}", "--keys", str(args.keys), "--quiet"),
        shell.start(
            "produce", "--file", str(broken.relative_to(ROOT)), "--count", "0", "--rate", f"{rate_bad:g}", "--quiet"
        ),
    ]
    total = good + bad
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"outputs of {total} requests", total=total)
        while not (predictions.done() and dead.done()):
            progress.update(task, completed=len(predictions.lines) + len(dead.lines))
            time.sleep(0.1)
        progress.update(task, completed=len(predictions.lines) + len(dead.lines))
    for producer in producers:
        if producer.wait(60) != 0:
            raise DemoFailed(f"`streamer produce` exited with {producer.returncode}")
    return summary(predictions, dead, good, bad, args.rate)


def summary(predictions: Stream, dead: Stream, good: int, bad: int, rate: float) -> bool:
    values = [json.loads(p["value"]) for p in predictions.lines]
    ids = {v["id"] for v in values}
    reasons = Counter(d["headers"]["streamer-error"] for d in dead.lines)
    seen = len(values) + len(dead.lines)
    exact = len(ids) == good and len(dead.lines) == bad
    table = Table(title="act 1: summary", show_header=False)
    table.add_row("requests sent", f"{good + bad} ({bad} broken)")
    table.add_row("predictions", f"{len(values)} over {len({p['key'] for p in predictions.lines})} keys")
    table.add_row("dead letters", ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "0")
    table.add_row("outputs / requests", f"{seen} / {good + bad}" + ("  [green]exactly one each" if exact else ""))
    stamps = [s for s in (predictions.first_at, dead.first_at, predictions.last_at, dead.last_at) if s is not None]
    if len(stamps) >= 2:
        elapsed = max(max(stamps) - min(stamps), 1e-6)
        table.add_row("rate", f"{seen / elapsed:,.0f} outputs/s (paced by the producer at {rate:,.0f}/s)")
    if values:
        p50, p99 = np.percentile([v["latency_ms"] for v in values], [50, 99])
        worst = max(v["latency_ms"] for v in values)
        table.add_row(
            "latency (request timestamp -> produced)", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms"
        )
    console.print(table)
    return exact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--engine", default=os.environ.get("STREAMER_ENGINE", "faust"), choices=("faust", "batch"))
    parser.add_argument("--no-drift", action="store_true", help="Skip act 2, the concept drift.")
    parser.add_argument("--no-graph", action="store_true", help="Skip act 3, the scoring graph.")
    parser.add_argument("--no-top", action="store_true", help="Skip the `streamer top --once` frame.")
    args = parser.parse_args()

    STATE.mkdir(parents=True, exist_ok=True)
    shell = Shell(console, ROOT, settings(args.engine))
    console.rule("[bold]streamer demo")
    console.print(
        "Every step is a streamer command, printed before it runs. To replay one by hand, from the repository root:"
    )
    console.print(f"  [bold cyan]. .venv/bin/activate; {shell.export_line()}[/]", soft_wrap=True)
    if (STATE / "dev.json").exists():
        shell.run("dev", "down", note="a stack left by an earlier demo")
    shell.run("dev", "up")
    worker = None
    try:
        console.rule("[bold]act 1: scoring, exactly one output per request")
        shell.run("topics", "create", "--partitions", str(args.partitions))
        worker = shell.start("worker", stderr_to=STATE / "logs" / "worker.log", note="it prints its metrics address")
        metrics_url = metrics_url_of(worker, 60)
        wait_ready(metrics_url.removesuffix("/metrics") + "/ready", worker, 120)
        if not act_scoring(shell, args, metrics_url):
            return 1
        if not args.no_top:
            shell.run("top", "--once", metrics_url, note="one frame of the live view of the worker's /metrics")
        if not args.no_drift or not args.no_graph:
            stream = shell.stream("--timeout", "600", note="predictions as they come, for acts 2 and 3")
        if not args.no_drift:
            import demo_drift

            console.rule("[bold]act 2: concept drift, labels flowing back")
            accuracy = demo_drift.run(console, shell, stream, metrics_url, STATE)
            half = len(accuracy["fraud"]) // 2
            console.print(
                f"after the drift (last {half - 2} chunks): frozen {np.mean(accuracy['fraud'][half + 2 :]):.3f}, "
                f"online {np.mean(accuracy['fraud-online'][half + 2 :]):.3f}; plot saved to "
                f"[cyan]{(STATE / 'drift.png').relative_to(ROOT)}[/]"
            )
        if not args.no_graph:
            import demo_graph

            console.rule("[bold]act 3: a scoring graph (enrichment, two phases, business rules)")
            if demo_graph.run(console, shell, stream, STATE)["answered"] == 0:
                return 1
        return 0
    finally:
        if worker is not None:
            code = shell.stop(worker, "the worker: it finishes what it holds, commits and exits 0")
            console.print(f"worker stopped (exit {code})")
        shell.stop_all()
        shell.run("dev", "down")


if __name__ == "__main__":
    sys.exit(main())
