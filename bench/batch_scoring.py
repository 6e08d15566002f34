"""Offline scoring (``streamer batch``) against the streaming worker, same model, same machine, same run.

    .venv/bin/python bench/batch_scoring.py [--rows 1000000] [--stream-count 200000] [--repeat 3]
        [--pairs jsonl:jsonl,csv:csv,parquet:parquet,jsonl:parquet,csv:parquet,parquet:jsonl]
        [--threads 0]

Files of ``--rows`` synthetic transactions (the shipped ``fraud`` model's features, with ids) are written once
as JSONL, CSV and Parquet. Each pair ``IN:OUT`` runs ``streamer batch in.IN -o out.OUT`` as a user would (a
subprocess, defaults: 8192 rows per chunk, ONNX Runtime threads = cores unless ``--threads``). Its rate is
rows over the engine's own time (the summary line: first chunk read to last output written), and also over
the whole command's wall time (imports and model loading included), both shown.

The stream figure is ``bench/throughput.py``'s ``batch`` row, run in the same process and interleaved with
the offline runs: ``--stream-count`` requests pre-loaded over 8 partitions of the embedded broker, one worker
with the batch engine, rate from its assignment to the last output read back. Rates are medians over
``--repeat`` runs; ratios are of medians. Appends to ``bench/results/batch_scoring.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from common import ROOT, embedded_stack, record
from throughput import run_engine

from streamer import synthetic


def write_inputs(directory: Path, rows: int) -> dict[str, Path]:
    x = synthetic.transactions(rows, seed=42)
    ids = [f"b-{i}" for i in range(rows)]
    columns = {"id": ids, **{name: x[:, i] for i, name in enumerate(synthetic.FEATURES)}}
    paths = {fmt: directory / f"in.{fmt}" for fmt in ("jsonl", "csv", "parquet")}
    pq.write_table(pa.table(columns), paths["parquet"])
    pcsv.write_csv(pa.table(columns), paths["csv"])
    with open(paths["jsonl"], "w") as file:
        for i in range(rows):
            file.write(json.dumps({"id": ids[i], "features": synthetic.features_of(x[i])}) + "\n")
    return paths


def run_offline(source: Path, out_fmt: str, directory: Path, threads: int, rows: int) -> tuple[float, float]:
    """(rows/s by the engine's summary, rows/s over the command's wall time)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env["STREAMER_MODELS_DIR"] = str(ROOT / "models")
    env["PYTHONPATH"] = str(ROOT)  # this checkout, not whatever the environment's editable install points at
    output = directory / f"out.{out_fmt}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "batch", str(source), "-o", str(output), "--threads", str(threads)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"streamer batch failed:\n{result.stderr[-3000:]}")
    match = re.search(r"([\d,]+) rows: ([\d,]+) predictions.* in ([\d.]+) s", result.stderr)
    if match is None or int(match.group(2).replace(",", "")) != rows:
        raise SystemExit(f"unexpected summary:\n{result.stderr[-2000:]}")
    return rows / float(match.group(3)), rows / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stream-count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pairs", default="jsonl:jsonl,csv:csv,parquet:parquet,jsonl:parquet,csv:parquet,parquet:jsonl"
    )
    parser.add_argument("--threads", type=int, default=0, help="streamer batch --threads (0: one per core).")
    args = parser.parse_args()
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    stream: list[float] = []
    offline: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    with embedded_stack() as state, tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = write_inputs(directory, args.rows)
        for _ in range(args.repeat):
            stream.append(
                run_engine(
                    state.kafka_bootstrap, "batch", args.stream_count, 8, directory / "stream", state.redis_url, None
                )
            )
            for in_fmt, out_fmt in pairs:
                name = f"{in_fmt} -> {out_fmt}"
                engine_rate, wall_rate = run_offline(paths[in_fmt], out_fmt, directory, args.threads, args.rows)
                offline.setdefault(name, []).append(engine_rate)
                wall.setdefault(name, []).append(wall_rate)
    base = statistics.median(stream)
    print(f"\n{args.rows:,} rows offline, {args.stream_count:,} requests streamed, {os.cpu_count()} cores, ", end="")
    print(f"{args.repeat} run(s) each; medians (min-max); ratios of medians to the streaming worker\n")
    print(f"{'':34} {'rows/s':>10} {'min-max':>19} {'x stream':>9} {'wall rows/s':>12} {'x stream':>9}")
    spread = f"{min(stream):,.0f}-{max(stream):,.0f}"
    print(f"{'streaming worker (batch engine)':34} {base:10,.0f} {spread:>19} {1.0:9.2f}")
    for name, rates in offline.items():
        median, median_wall = statistics.median(rates), statistics.median(wall[name])
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        print(
            f"{'batch ' + name:34} {median:10,.0f} {spread:>19} {median / base:9.2f}"
            f" {median_wall:12,.0f} {median_wall / base:9.2f}"
        )
    record(
        "batch_scoring",
        {
            "rows": args.rows,
            "stream_count": args.stream_count,
            "threads": args.threads,
            "stream": stream,
            "offline": offline,
            "wall": wall,
            "ratios": {name: statistics.median(r) / base for name, r in offline.items()},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
