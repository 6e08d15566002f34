"""``streamer top``: the metrics maths as pure functions (``top/view.py``) over what a worker's ``WorkerMetrics``
exposes; the command's ``--once`` frame against HTTP servers is ``tests/integration/test_top_command.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.adapters.prometheus_metrics import WorkerMetrics, observe_many
from streamer.top.terminal import normalize_url, parse_exposition
from streamer.top.view import Scrape, build_view, counter_rate, histogram_quantile


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # the first bucket starts at 0
    assert histogram_quantile(0.99, [(0.1, 5.0), (math.inf, 10.0)]) == pytest.approx(0.1)  # +Inf: highest bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_counter_rate_treats_a_decrease_as_a_reset() -> None:
    assert counter_rate(100.0, 150.0, 2.0) == pytest.approx(25.0)
    assert counter_rate(100.0, 30.0, 2.0) == pytest.approx(15.0)  # restarted: all 30 are new
    assert counter_rate(None, 30.0, 2.0) is None
    assert counter_rate(1.0, 2.0, 0.0) is None


def worker_exposition(predictions: int, dead: int, latencies: list[float], lag: dict[str, int]) -> bytes:
    metrics = WorkerMetrics()
    metrics.requests.labels("fraud", "1", "prediction").inc(predictions)
    metrics.requests.labels("fraud", "1", "dead_letter").inc(dead)
    metrics.dead_letters.labels("schema").inc(dead)
    if latencies:
        observe_many(metrics.latency, np.array(latencies))
    for partition, messages in lag.items():
        metrics.lag.labels(partition).set(messages)
    metrics.on_rolling("fraud", "1", "5m", {"accuracy": 0.9, "count": 250.0})
    return metrics.exposition()


def scrape(target: str, at_s: float, text: bytes | str) -> Scrape:
    return Scrape(target, at_s, parse_exposition(text.decode() if isinstance(text, bytes) else text))


def test_a_view_of_two_workers_sums_rates_and_merges_histograms_over_the_interval() -> None:
    before = [
        scrape("w1", 0.0, worker_exposition(100, 2, [0.004] * 100, {"0": 3})),
        scrape("w2", 0.0, worker_exposition(500, 0, [0.004] * 500, {"1": 1})),
    ]
    now = [
        scrape("w1", 2.0, worker_exposition(300, 6, [0.004] * 100 + [0.02] * 200, {"0": 5})),
        scrape("w2", 2.0, worker_exposition(40, 0, [0.2] * 40, {"1": 2, "2": 4})),  # w2 restarted: reset
        Scrape("w3", 2.0, error="connection refused"),
    ]
    view = build_view(before, now)
    assert view.interval_s == pytest.approx(2.0) and view.up == 2
    assert [(w.target, w.up) for w in view.workers] == [("w1", True), ("w2", True), ("w3", False)]
    w1, w2, w3 = view.workers
    assert w1.requests_per_s == pytest.approx((306 - 102) / 2) and w1.lag_messages == 5 and w1.partitions == 1
    assert w2.requests_per_s == pytest.approx(40 / 2) and w2.lag_messages == 6 and w2.partitions == 2
    assert w3.error == "connection refused"
    (fraud,) = view.requests
    assert (fraud.model, fraud.version, fraud.predictions_total, fraud.dead_letters_total) == ("fraud", "1", 340, 6)
    assert fraud.predictions_per_s == pytest.approx((200 + 40) / 2)
    assert fraud.dead_letters_per_s == pytest.approx(4 / 2)
    # the interval's observations only: 200 at 20 ms (w1) and 40 at 200 ms (w2, counted whole after its reset)
    end_to_end = next(row for row in view.latencies if row.name == "end to end")
    assert end_to_end.recent and end_to_end.count == 240
    p50, _, p99 = end_to_end.quantiles
    assert 0.015 < p50 <= 0.02 and 0.1 < p99 <= 0.25
    first = view.dead_letters[0]  # by total, largest first
    assert (first.reason, first.total, first.per_s) == ("schema", 6, pytest.approx(2.0))
    assert [(a.model, a.version, a.window, a.accuracy, a.labels) for a in view.accuracy] == [
        ("fraud", "1", "5m", 0.9, 250.0)
    ]


def test_one_scrape_gives_totals_and_quantiles_since_the_start() -> None:
    view = build_view(None, [scrape("w1", 5.0, worker_exposition(10, 1, [0.004] * 10, {}))])
    assert view.interval_s is None
    assert view.requests[0].predictions_per_s is None and view.requests[0].predictions_total == 10
    end_to_end = next(row for row in view.latencies if row.name == "end to end")
    assert not end_to_end.recent and end_to_end.count == 10


def test_an_idle_interval_falls_back_to_quantiles_since_the_start() -> None:
    text = worker_exposition(10, 0, [0.004] * 10, {})
    view = build_view([scrape("w1", 0.0, text)], [scrape("w1", 1.0, text)])
    end_to_end = next(row for row in view.latencies if row.name == "end to end")
    assert not end_to_end.recent and end_to_end.quantiles[0] is not None
    assert view.requests[0].predictions_per_s == 0.0


def test_both_names_of_the_rolling_accuracy_are_read() -> None:
    old = (
        "# TYPE streamer_rolling_metric gauge\n"
        'streamer_rolling_metric{model="fraud",version="2",window="1h",metric="accuracy"} 0.8\n'
        'streamer_rolling_metric{model="fraud",version="2",window="1h",metric="count"} 40\n'
        'streamer_rolling_metric{model="fraud",version="2",window="5m",metric="accuracy"} 0.7\n'
        'streamer_rolling_metric{model="fraud",version="2",window="5m",metric="log_loss"} 0.3\n'
    )
    new = (
        "# TYPE streamer_rolling_accuracy gauge\n"
        'streamer_rolling_accuracy{model="fraud",version="10",window="5m"} 0.95\n'
        'streamer_rolling_accuracy{model="fraud",version="3",window="5m"} NaN\n'
    )
    view = build_view(None, [scrape("old", 0.0, old), scrape("new", 0.0, new)])
    rows = [(a.version, a.window, a.accuracy, a.labels) for a in view.accuracy]
    assert rows == [("2", "5m", 0.7, None), ("2", "1h", 0.8, 40.0), ("10", "5m", 0.95, None)]


def test_urls_are_completed() -> None:
    assert normalize_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert normalize_url("http://w1:9464") == "http://w1:9464/metrics"
    assert normalize_url("https://w1/custom/path") == "https://w1/custom/path"
