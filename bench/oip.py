"""On-demand serving (Open Inference Protocol v2 over HTTP): requests/s and p50/p99 latency at 1 to 64 concurrent
clients, micro-batching on and off, on the shipped model; the batching gain at equal p99.

    .venv/bin/python bench/oip.py [--clients 1,8,16,32,64] [--seconds 4] [--rows 1] [--modes on,off]
        [--before-code DIR]

Each mode runs its own ``streamer serve`` (batching on: the worker's default policy, ``batch_max_size`` 256,
``batch_close_when_drained``; off: ``batch_max_size`` 1, each request scored alone on its own HTTP thread).
Each client is a keep-alive connection sending one-row ``[1, 6]`` FP32 inference requests back to back
(closed loop) as pre-encoded bytes from one asyncio process, so the client costs little beside the server.
The first second of each point is warm-up and not counted. The server's ``streamer_oip_batch_size_requests``
gives the mean requests per ONNX call.

``--before-code DIR`` (a checkout: ``git worktree add DIR COMMIT``, or ``git archive COMMIT | tar -x -C DIR``)
also runs each mode's server from that code (its ``PYTHONPATH``) beside this checkout's, both up at once and
measured in alternation (``--rounds`` rounds per point, the median reported), and prints them side by side.

The gain at equal p99: for a p99 budget -- each p99 batching-off reaches beyond one client, the last one at the
highest client count -- the best throughput each mode sustains with its p99 within the budget (interpolated
between measured points), and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, record

from streamer import synthetic


def start_server(batching: bool, workdir: Path, code: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``streamer serve`` of this checkout, or of the checkout ``code``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    environ |= {"STREAMER_MODELS_DIR": str(ROOT / "models"), "STREAMER_LOG_LEVEL": "WARNING"}
    environ["PYTHONPATH"] = code or str(ROOT)
    if not batching:
        environ["STREAMER_BATCH_MAX_SIZE"] = "1"
    log_path = workdir / f"serve-{'on' if batching else 'off'}-{'before' if code else 'after'}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "serve", "--port", "0"],
            cwd=workdir,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not (match := re.search(r"oip: http://(\S+)/v2", log_path.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"streamer serve did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return process, match.group(1)


def request_bytes(address: str, rows: np.ndarray) -> bytes:
    body = json.dumps(
        {
            "inputs": [
                {"name": "float_input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
            ]
        }
    ).encode()
    head = (
        f"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def client(
    address: str, requests: list[bytes], start: float, stop: float, latencies: list[float], errors: list[int]
) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    index = 0
    try:
        while True:
            sent = time.perf_counter()
            if sent >= stop:
                return
            writer.write(requests[index % len(requests)])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done = time.perf_counter()
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            elif sent >= start:
                latencies.append(done - sent)
    finally:
        writer.close()


def batch_stats(address: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = dict(
        (name, float(value))
        for name, _, value in (line.rpartition(" ") for line in text.splitlines() if line and line[0] != "#")
    )
    return values.get("streamer_oip_batch_size_requests_sum", 0.0), values.get(
        "streamer_oip_batch_size_requests_count", 0.0
    )


def measure(address: str, clients: int, seconds: float, requests: list[bytes]) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    before = batch_stats(address)

    async def main() -> None:
        start = time.perf_counter() + 1.0  # warm-up
        stop = start + seconds
        await asyncio.gather(*(client(address, requests, start, stop, latencies, errors) for _ in range(clients)))

    asyncio.run(main())
    after = batch_stats(address)
    values = np.asarray(latencies) * 1000
    batches = after[1] - before[1]
    return {
        "clients": clients,
        "requests_per_s": round(len(values) / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "errors": len(errors),
        "mean_batch": round((after[0] - before[0]) / batches, 2) if batches else None,
    }


def best_within(points: list[dict[str, Any]], budget_ms: float) -> float:
    """The highest throughput with p99 within ``budget_ms``, interpolated linearly between measured points."""
    ordered = sorted(points, key=lambda p: p["clients"])
    best = 0.0
    for low, high in itertools.pairwise(ordered):
        if low["p99_ms"] <= budget_ms:
            best = max(best, low["requests_per_s"])
        if low["p99_ms"] <= budget_ms < high["p99_ms"]:
            share = (budget_ms - low["p99_ms"]) / (high["p99_ms"] - low["p99_ms"])
            best = max(best, low["requests_per_s"] + share * (high["requests_per_s"] - low["requests_per_s"]))
    if ordered and ordered[-1]["p99_ms"] <= budget_ms:
        best = max(best, ordered[-1]["requests_per_s"])
    return best


def median_point(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over rounds of one point (the rounds kept beside it)."""
    point: dict[str, Any] = {"clients": rounds[0]["clients"]}
    for key in ("requests_per_s", "p50_ms", "p99_ms", "errors", "mean_batch"):
        values = [r[key] for r in rounds if r[key] is not None]
        point[key] = round(float(np.median(values)), 3) if values else None
    point["rounds"] = rounds
    return point


def run_points(
    codes: dict[str, str | None], mode: str, levels: list[int], args: argparse.Namespace, rows: np.ndarray, tmp: Path
) -> dict[str, list[dict[str, Any]]]:
    """Each code's server in one batching mode, all running at once, measured in alternation: at each client
    count, ``args.rounds`` rounds of one measurement per server, so that a change of the machine's load falls
    on both; the median of the rounds is the point."""
    servers = {label: start_server(mode == "on", tmp, code) for label, code in codes.items()}
    points: dict[str, list[dict[str, Any]]] = {label: [] for label in codes}
    try:
        requests = {
            label: [request_bytes(address, rows[i : i + args.rows]) for i in range(0, 1000 - args.rows)]
            for label, (_, address) in servers.items()
        }
        for label, (_, address) in servers.items():
            measure(address, 1, 0.5, requests[label])  # warm the server and the model
        for clients in levels:
            rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in codes}
            for _ in range(args.rounds):
                for label, (_, address) in servers.items():
                    rounds[label].append(measure(address, clients, args.seconds, requests[label]))
            for label in codes:
                point = median_point(rounds[label])
                points[label].append(point)
                shown = "  ".join(f"{k}={v}" for k, v in point.items() if k != "rounds")
                print(f"{label:<6} batching {mode:<3} {shown}", flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--modes", default="on,off", help="batching on, off, or both")
    parser.add_argument("--before-code", default=None, help="a checkout whose server runs beside this one's")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per point (median reported)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    rows = synthetic.transactions(1000, seed=3).astype(np.float32)
    results: dict[str, list[dict[str, Any]]] = {}
    before: dict[str, list[dict[str, Any]]] = {}
    codes: dict[str, str | None] = {"before": args.before_code} if args.before_code else {}
    codes["after"] = None
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            points = run_points(codes, mode, levels, args, rows, Path(tmp))
            results[mode] = points["after"]
            if args.before_code:
                before[mode] = points["before"]
    print()
    gains = []
    if set(modes) >= {"on", "off"}:
        for point in sorted(results["off"], key=lambda p: p["clients"])[1:]:  # each p99 batching-off reaches
            budget = point["p99_ms"]
            on, off = best_within(results["on"], budget), best_within(results["off"], budget)
            gains.append(
                {"p99_ms": budget, "on": round(on), "off": round(off), "gain": round(on / off, 2) if off else None}
            )
            print(
                f"at p99 <= {budget:.2f} ms: batching on {on:,.0f} req/s, off {off:,.0f} req/s: "
                f"gain x{gains[-1]['gain']}"
            )
        print("\n| clients | on req/s | on p50 ms | on p99 ms | on mean batch | off req/s | off p50 ms | off p99 ms |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for a, b in zip(results["on"], results["off"], strict=True):
            print(
                f"| {a['clients']} | {a['requests_per_s']:,.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | "
                f"{a['mean_batch']} | {b['requests_per_s']:,.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} |"
            )
    for mode, points in before.items():
        print(f"\nbatching {mode}: before ({args.before_code}) and after, medians of {args.rounds} alternating rounds")
        print("| clients | before req/s | before p99 ms | after req/s | after p99 ms | req/s after/before |")
        print("| --- | --- | --- | --- | --- | --- |")
        for a, b in zip(points, results[mode], strict=True):
            ratio = b["requests_per_s"] / a["requests_per_s"] if a["requests_per_s"] else float("nan")
            print(
                f"| {a['clients']} | {a['requests_per_s']:,.0f} | {a['p99_ms']:.2f} | {b['requests_per_s']:,.0f} | "
                f"{b['p99_ms']:.2f} | {ratio:.2f} |"
            )
    record(
        "oip",
        {
            "rows_per_request": args.rows,
            "seconds": args.seconds,
            "rounds": args.rounds,
            **results,
            "gains": gains,
            "p99_budget_ms": gains[-1]["p99_ms"] if gains else None,
            "gain": gains[-1]["gain"] if gains else None,
            "before_code": args.before_code,
            "before": before,
        },
    )


if __name__ == "__main__":
    main()
