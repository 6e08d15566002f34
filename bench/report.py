"""Writes docs/performance.md from the benches' results: the last recorded run of each, with its machine and commit.

    .venv/bin/python bench/report.py          (``make bench`` runs the benches, then this)

Each section reads the last line of one ``bench/results/*.jsonl`` written by the current version of its bench
(older lines lack what the tables show and are skipped). Every figure in the page comes from those lines: edit
the benches or this script, never the page.
"""

from __future__ import annotations

import json
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "performance.md"


def last(name: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.jsonl"
    if not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    matching = [line for line in lines if wanted(line)]
    return matching[-1] if matching else None


def run_line(run: dict[str, Any], command: str) -> str:
    commit = run["commit"] + (" with local changes" if run.get("dirty") else "")
    machine = run.get("cpu") or run.get("machine", "?")
    load = run.get("load_average")
    shown = f", load average {load[0]:.1f} at the end" if load else ""
    before = f" Rows named `before:` run commit `{run['before_commit']}`." if "before_commit" in run else ""
    return (
        f"Run {run['time']} at commit `{commit}` on {machine} ({run['cpus']} cores{shown}), Python "
        f"{run['python']}: `{command}`.{before}"
    )


def wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=116, break_on_hyphens=False, break_long_words=False)


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def throughput(run: dict[str, Any]) -> list[str]:
    runs: dict[str, list[float]] = run["runs"]
    rows = {name: statistics.median(rates) for name, rates in runs.items()}
    baselines = [name for name in ("confluent-kafka passthrough", "Faust relay (user-written)") if name in rows]
    head = "| row | rows/s, median (range) | " + " | ".join(f"× {b}" for b in baselines)
    out = [
        head + " | × same row without Redis |",
        "| --- | ---: | " + " | ".join("---:" for _ in baselines) + " | ---: |",
    ]
    for name, rate in rows.items():
        spread = f"{fmt(min(runs[name]))}–{fmt(max(runs[name]))}"
        ratios = " | ".join(f"{rate / rows[b]:.2f}" for b in baselines)
        plain = name.replace("+redis", "")
        redis = f"{rate / rows[plain]:.2f}" if "+redis" in name and plain in rows else ""
        out.append(f"| `{name}` | {fmt(rate)} ({spread}) | {ratios} | {redis} |")
    return out


def latency(run: dict[str, Any]) -> list[str]:
    out = [
        "| rate | row | p50 ms | p99 ms (range) | p99 × relay | p50 − relay, ms | rows/batch | batch wait ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate, rows in run["runs"].items():
        relay = next(name for name in rows if name.startswith("relay"))
        relay_p50 = statistics.median(f["p50_ms"] for f in rows[relay])
        relay_p99 = statistics.median(f["p99_ms"] for f in rows[relay])
        for name, figures in rows.items():
            p50 = statistics.median(f["p50_ms"] for f in figures)
            p99s = [f["p99_ms"] for f in figures]
            p99 = statistics.median(p99s)
            batch = [f["mean_batch_rows"] for f in figures if "mean_batch_rows" in f]
            wait = [f["mean_batch_wait_ms"] for f in figures if "mean_batch_wait_ms" in f]
            out.append(
                f"| {rate} | {name} | {p50:.1f} | {p99:.1f} ({min(p99s):.0f}–{max(p99s):.0f}) | {p99 / relay_p99:.2f} "
                f"| {p50 - relay_p50:+.1f} | {f'{statistics.median(batch):.1f}' if batch else ''} "
                f"| {f'{statistics.median(wait):.2f}' if wait else ''} |"
            )
    return out + stages(run)


STAGES = ("consumed", "batched", "scored", "produced", "delivered", "committed", "loop_lag")


def stages(run: dict[str, Any]) -> list[str]:
    """Where a request's time goes inside the worker (``streamer_stage_latency_seconds``, one sampled request per
    batch, and the event loop's lag): mean / p99 ms per stage, medians over runs; absent from older runs."""
    rows = [
        (rate, name, figures)
        for rate, named in run["runs"].items()
        for name, figures in named.items()
        if any(f"{stage}_mean_ms" in f for f in figures for stage in STAGES)
    ]
    if not rows:
        return []
    out = [
        "",
        *wrap(
            "Inside the worker, per stage (the time from the stage before; `consumed` counts from the request's "
            "Kafka timestamp) and the event loop's lag: mean / p99 ms, p99 as the upper bound of its histogram "
            "bucket."
        ),
        "",
        "| rate | row | " + " | ".join(stage.replace("_", " ") for stage in STAGES) + " |",
        "| ---: | --- | " + " | ".join("---:" for _ in STAGES) + " |",
    ]
    for rate, name, figures in rows:
        cells = []
        for stage in STAGES:
            means = [f[f"{stage}_mean_ms"] for f in figures if f"{stage}_mean_ms" in f]
            p99s = [f[f"{stage}_p99_ms"] for f in figures if f"{stage}_p99_ms" in f]
            cells.append(f"{statistics.median(means):.1f} / {statistics.median(p99s):g}" if means else "")
        out.append(f"| {rate} | {name} | " + " | ".join(cells) + " |")
    return out


def offline(run: dict[str, Any]) -> list[str]:
    stream = statistics.median(run["stream"])
    spread = f"{fmt(min(run['stream']))}–{fmt(max(run['stream']))}"
    out = [
        "| | rows/s (range) | × streaming worker | rows/s over the whole command | × |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| streaming worker, batch engine | {fmt(stream)} ({spread}) | 1.00 | | |",
    ]
    for name, rates in run["offline"].items():
        rate, wall = statistics.median(rates), statistics.median(run["wall"][name])
        out.append(
            f"| {name} | {fmt(rate)} ({fmt(min(rates))}–{fmt(max(rates))}) | **{rate / stream:.1f}** | {fmt(wall)} "
            f"| {wall / stream:.1f} |"
        )
    return out


def hot_path(run: dict[str, Any]) -> list[str]:
    out = ["| step | before, ms | after, ms | × |", "| --- | ---: | ---: | ---: |"]
    for name, figures in run["steps"].items():
        out.append(f"| {name} | {figures['before_ms']:.2f} | {figures['after_ms']:.2f} | {figures['ratio']:.2f} |")
    whole = run.get("whole")
    if whole:
        out.append(f"| whole path | {whole['before_ms']:.2f} | {whole['after_ms']:.2f} | {whole['ratio']:.2f} |")
    return out


def produce(run: dict[str, Any]) -> list[str]:
    out = ["| variant | records/s, median (range) | CPU µs per record (calling thread) |", "| --- | ---: | ---: |"]
    for name, rates in run["rates"].items():
        cpu = statistics.median(run["cpu_us_per_record"][name])
        out.append(f"| {name} | {fmt(statistics.median(rates))} ({fmt(min(rates))}–{fmt(max(rates))}) | {cpu:.2f} |")
    return out


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], bool], str, Callable[[dict[str, Any]], list[str]], str]] = [
    (
        "Throughput",
        "throughput",
        lambda line: "setup" in line,
        "bench/throughput.py --repeat 3",
        throughput,
        "200,000 requests pre-loaded over 8 partitions (2,000 keys) by a client process (linger 5 ms, idempotent, "
        "acks=all); one `streamer worker` started through its CLI with its six topics, exactly-once read-back on; "
        "`+redis`: Redis configured, so that every background service runs (prediction log, label consumer, online "
        "refresh, control channel, concept drift). The rate runs from the worker's assignment to the last output "
        "read back by a `read_committed` consumer. Baselines in the same run: a confluent-kafka consume -> produce "
        "-> commit passthrough (`bench/passthrough.py`) and a Faust agent relaying each event as a user would write "
        "it, `take_events(1000, within=0.05)` (`bench/faust_relay.py`).",
    ),
    (
        "Latency",
        "latency",
        lambda line: "setup" in line,
        "bench/latency.py --repeat 3",
        latency,
        "Requests sent at a fixed rate by a client process (linger 5 ms, idempotent, acks=all, 2,000 keys) to a "
        "worker started through its CLI with Redis configured and every background service on; latency is from a "
        "request's send time to its prediction's arrival at a `read_committed` consumer process (fetch wait 5 ms), "
        "the first second dropped. The relay (`bench/relay.py`: consume -> produce with the same client settings, "
        "no scoring) is the floor: the same two broker hops. A fresh broker and redis-server per row.",
    ),
    (
        "Offline scoring (`streamer batch`)",
        "batch_scoring",
        lambda line: "stream" in line,
        "bench/batch_scoring.py",
        offline,
        "`streamer batch` on files of 1,000,000 rows of the shipped `fraud` model, run as a user runs it (a "
        "subprocess, defaults); its rate is the engine's own (first chunk read to last row written), then over the "
        "whole command (imports and model loading included). The stream is `bench/throughput.py`'s `batch` row "
        "(200,000 requests, no Redis), interleaved with the offline runs in the same run. A JSONL file is scored in "
        "one worker process per core; CSV and Parquet in threads (Arrow and ONNX Runtime release the GIL).",
    ),
    (
        "The hot path, step by step",
        "hot_path",
        lambda line: "steps" in line,
        "bench/hot_path.py --before-code DIR",
        hot_path,
        "`score_records` + `output_records` over 10,000-row batches of the shipped model, in one process: each step's "
        "earlier implementation (kept in the bench) against the current one, interleaved rounds, medians; `ascii` "
        "compares an alternative that was not taken (a `bytes.isascii` call per value) with the one copy of the batch "
        "the decoder keeps. The whole path: two checkouts in alternating interpreters.",
    ),
    (
        "Producing predictions",
        "produce_batch",
        lambda line: "cpu_us_per_record" in line,
        "bench/produce_batch.py",
        produce,
        "Prediction-sized records to 8 partitions of the embedded broker, 256 per batch, idempotent, acks=all, "
        "linger 5 ms, one delivery callback per batch: per-message `produce` with the three `streamer-source-*` "
        "headers (what the worker does), without them, and confluent-kafka's `produce_batch` (which cannot carry "
        "headers). Records/s swing with the broker sharing the cores; the calling thread's CPU per record is the "
        "steady figure.",
    ),
]


INTRO = (
    "Every figure on this page is generated by `make bench` (the benches, then `bench/report.py`) from the last run "
    "recorded in `bench/results/*.jsonl`, with its machine and commit. The development machine has two cores shared "
    "by the broker, redis-server, the worker and the load generator: figures are noisy, so every comparison is a "
    "ratio within one run. Do not edit this page by hand."
)


def main() -> int:
    page = [
        "# Performance",
        "",
        *wrap(INTRO),
    ]
    for title, name, wanted, command, table, how in SECTIONS:
        page += ["", f"## {title}", ""]
        run = last(name, wanted)
        if run is None:
            page.append(f"No run of `{command}` recorded yet.")
            continue
        page += [
            *wrap(how),
            "",
            *wrap(run_line(run, f".venv/bin/python {run.get('command', command)}")),
            "",
            *table(run),
        ]
    PAGE.write_text("\n".join(page) + "\n")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
