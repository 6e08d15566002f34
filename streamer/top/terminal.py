"""``streamer top``: a live terminal view of one or more workers' ``/metrics``, for people without Grafana.

The shell of ``core/metrics_view.py``: it fetches each worker's exposition over HTTP (concurrently, each with a
timeout; a worker that does not answer is a "down" row, never an error of the command), parses it with
``prometheus_client``'s parser, and renders the pure ``View`` with rich. Rates need two scrapes: the live view
has them from its second frame on; ``--once`` scrapes twice, ``interval_s`` apart, prints one frame and exits
(0 when at least one worker answered, 1 when none did).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamer.top.view import QUANTILES, Samples, Scrape, View, build_view

DEFAULT_URL = "http://127.0.0.1:9464/metrics"


def normalize_url(target: str) -> str:
    """``host:port`` or ``http://host:port`` -> ``http://host:port/metrics``; a URL with a path is kept."""
    url = target if "://" in target else f"http://{target}"
    scheme, _, rest = url.partition("://")
    if "/" not in rest:
        url = f"{scheme}://{rest}/metrics"
    return url


def parse_exposition(text: str) -> Samples:
    """Prometheus text format -> {sample name: [(labels, value)]} (``_bucket``/``_count``/``_total`` kept)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def scrape(url: str, timeout_s: float = 2.0) -> Scrape:
    """One worker's metrics now; a failure is a ``Scrape`` with ``error`` set (one line)."""
    at = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
        return Scrape(url, at, parse_exposition(text))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Scrape(url, at, error=str(reason))


def scrape_all(urls: Sequence[str], timeout_s: float = 2.0) -> list[Scrape]:
    if len(urls) == 1:
        return [scrape(urls[0], timeout_s)]
    with ThreadPoolExecutor(max_workers=min(len(urls), 16)) as pool:
        return list(pool.map(lambda url: scrape(url, timeout_s), urls))


# ------------------------------------------------------------------------------------------------ rendering


def _short(url: str) -> str:
    """``http://host:port/metrics`` -> ``host:port`` (the other forms as given)."""
    rest = url.split("://", 1)[-1]
    return rest.removesuffix("/metrics")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


_LEFT: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False}


def render(view: View) -> RenderableType:
    """One frame: workers, requests per model version, latency quantiles, dead letters, rolling accuracy."""
    over = f"rates over the last {view.interval_s:.1f} s" if view.interval_s else "totals only (one scrape)"
    header = Text.assemble(("streamer top", "bold"), f"  {view.up}/{len(view.workers)} worker(s) up  ", (over, "dim"))

    workers = Table("worker", "state", "req/s", "lag", "partitions", "in flight", **_LEFT)
    for w in view.workers:
        # scraped text (an error, a model name) is never markup: Text, not a markup string
        state = Text("up", "green") if w.up else Text.assemble(("down", "red"), f" {w.error or ''}")
        lag = f"{w.lag_messages:,.0f}" if w.up else "-"
        workers.add_row(
            Text(_short(w.target)),
            state,
            _rate(w.requests_per_s),
            lag,
            str(w.partitions) if w.up else "-",
            f"{w.inflight_batches:.0f}" if w.up else "-",
        )

    requests = Table("model", "version", "pred/s", "dead/s", "predictions", "dead letters", **_LEFT)
    for r in view.requests:
        requests.add_row(
            Text(r.model),
            Text(r.version),
            _rate(r.predictions_per_s),
            _rate(r.dead_letters_per_s),
            f"{r.predictions_total:,.0f}",
            f"{r.dead_letters_total:,.0f}",
        )

    latency = Table("latency (ms)", *(f"p{q * 100:g}" for q in QUANTILES), "observations", "over", **_LEFT)
    for row in view.latencies:
        latency.add_row(
            row.name,
            *(_ms(v) for v in row.quantiles),
            f"{row.count:,.0f}",
            "interval" if row.recent else "since start",
        )

    reasons = Table("dead-letter reason", "total", "per s", **_LEFT)
    for d in view.dead_letters:
        if d.total > 0:
            reasons.add_row(Text(d.reason), f"{d.total:,.0f}", _rate(d.per_s))
    if not requests.rows:
        requests.add_row("(no requests yet)", "", "", "", "", "")
    if not reasons.rows:
        reasons.add_row("(none)", "0", "-")

    accuracy = Table("model", "version", "window", "rolling accuracy", "labels", **_LEFT)
    for a in view.accuracy:
        labels = "-" if a.labels is None else f"{a.labels:,.0f}"
        accuracy.add_row(Text(a.model), Text(a.version), Text(a.window), f"{a.accuracy:.3f}", labels)
    if not accuracy.rows:
        accuracy.add_row("(no labels joined yet)", "", "", "", "")

    side_by_side = Table.grid(padding=(0, 4))
    side_by_side.add_row(reasons, accuracy)
    gap = Text("")
    return Group(header, gap, workers, gap, requests, gap, latency, gap, side_by_side)


# ------------------------------------------------------------------------------------------------ loop


def run(urls: Sequence[str], interval_s: float, once: bool, console: Console) -> int:
    """The command: a live view until Ctrl-C (exit 0), or ``once``: one frame (exit 1 when no worker answered)."""
    targets = [normalize_url(u) for u in urls] or [DEFAULT_URL]
    timeout_s = max(0.5, min(interval_s, 5.0))
    if once:
        first = scrape_all(targets, timeout_s)
        time.sleep(interval_s)
        view = build_view(first, scrape_all(targets, timeout_s))
        console.print(render(view))
        return 0 if view.up else 1
    previous: list[Scrape] | None = None
    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                started = time.monotonic()
                current = scrape_all(targets, timeout_s)
                live.update(render(build_view(previous, current)), refresh=True)
                previous = current
                time.sleep(max(interval_s - (time.monotonic() - started), 0.05))
    except KeyboardInterrupt:
        return 0
