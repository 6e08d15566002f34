"""The Prometheus observer's cost per batch, in-process: ``observe_many`` and the data path's per-batch hooks.

    .venv/bin/python bench/metrics_hooks.py [--rows 500] [--rounds 5] [--before-code DIR]

Times, in a fresh Python process per measurement: ``observe_many`` of a batch's latencies (``--rows`` values,
and 4 values: the small-batch path), and ``on_scored`` + ``on_released`` for one scored batch of ``--rows``
synthetic requests (one binary model; scores, predicted classes, latencies, request outcomes). With
``--before-code DIR`` (a checkout, e.g. ``git worktree add DIR COMMIT``) the same measurements run from that
code too, alternating before/after for ``--rounds`` rounds; the table shows medians and after/before ratios.
No Kafka, no Redis: the inputs are built by the core's own scoring with a numpy stand-in for the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASURES = ("observe_many_rows_us", "observe_many_4_us", "hooks_per_batch_us")


def measure(rows: int, seconds: float) -> dict[str, float]:
    """µs per call of each measured operation, in this process (whichever ``streamer`` it imports)."""
    import numpy as np

    from streamer.adapters.prometheus_metrics import WorkerMetrics, observe_many
    from streamer.core.cards import ModelCard, OutputRef
    from streamer.core.ledger import Batch, Release
    from streamer.core.output_records import output_records
    from streamer.core.routing import Catalog
    from streamer.core.scoring import score_records
    from streamer.core.types import Records

    card = ModelCard(
        "fraud",
        1,
        "binary-classification",
        ("a", "b"),
        "x",
        "0" * 64,
        OutputRef("probabilities", 1),
        OutputRef("label"),
    )

    def infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        p = 1 / (1 + np.exp(-x.sum(axis=1)))
        return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}

    rng = np.random.default_rng(0)
    values = [
        json.dumps({"id": f"r{i}", "features": {"a": float(a), "b": float(b)}}).encode()
        for i, (a, b) in enumerate(rng.normal(size=(rows, 2)))
    ]
    now_ms = time.time() * 1000
    records = Records(
        "requests",
        0,
        list(range(rows)),
        [b"k%d" % i for i in range(rows)],
        values,
        [int(now_ms) - 5] * rows,
        [None] * rows,
    )
    scored = score_records(records, Catalog({"fraud": {1: card}}), infer)
    batch = Batch(0, 0, records, 0.0, 0.004)
    release = Release(batch, scored, None, 0)
    out = output_records(scored, None, now_ms, 1 << 20)
    latencies = rng.gamma(2.0, 0.004, size=rows)
    few = latencies[:4]
    metrics = WorkerMetrics()

    def per_call(operation) -> float:
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(50):
                operation()
            calls += 50
        return elapsed / calls * 1e6

    def hooks() -> None:
        metrics.on_scored([batch], [scored], 0.003)
        metrics.on_released(release, out)

    return {
        "observe_many_rows_us": per_call(lambda: observe_many(metrics.latency, latencies)),
        "observe_many_4_us": per_call(lambda: observe_many(metrics.latency, few)),
        "hooks_per_batch_us": per_call(hooks),
    }


def run_child(code: Path, rows: int, seconds: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, __file__, "--child", "--rows", str(rows), "--seconds", str(seconds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=code)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measured operation per round")
    parser.add_argument("--before-code", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rows, args.seconds)))
        return 0
    codes = {"after": ROOT} | ({"before": args.before_code.resolve()} if args.before_code else {})
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in codes}
    for _ in range(args.rounds):
        for label, code in sorted(codes.items(), reverse=True):  # before first in each round
            runs[label].append(run_child(code, args.rows, args.seconds))
    medians = {
        label: {m: statistics.median(r[m] for r in results) for m in MEASURES} for label, results in runs.items()
    }
    print(f"{'measure':24} " + " ".join(f"{label:>12}" for label in sorted(codes, reverse=True)) + "   after/before")
    for m in MEASURES:
        cells = " ".join(f"{medians[label][m]:12.1f}" for label in sorted(codes, reverse=True))
        ratio = f"{medians['after'][m] / medians['before'][m]:14.2f}" if "before" in medians else ""
        print(f"{m:24} {cells} {ratio}")
    sys.path.insert(0, str(ROOT / "bench"))
    from common import record

    record("metrics_hooks", {"rows": args.rows, "rounds": args.rounds, "medians_us": medians})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
