"""What ``streamer top`` shows, computed from scrapes of the workers' ``/metrics``: rates, quantiles, lag.

Pure: a ``Scrape`` is one worker's samples at a time ``at_s`` (already parsed from the Prometheus text format by
the shell); ``build_view`` takes the previous and the current scrape of every worker and returns a ``View``.

The maths is Prometheus's own, so that the numbers agree with a Grafana panel over the same interval:
- a counter's rate is ``(now - before) / seconds``; a counter lower than before was reset (the worker
  restarted), and then everything it counts now happened within the interval (``rate()``'s reset rule);
- a quantile comes from the histogram's cumulative buckets by linear interpolation inside the bucket that holds
  the rank (``histogram_quantile``), over the interval's observations (bucket deltas, summed over the workers);
  an interval without observations falls back to everything since the workers started, and says so;
- rates and counts are summed over the workers; the rolling evaluation is shared by all workers (Redis), so it
  is read from the first worker that exports it, not summed. Both names of the rolling accuracy are read:
  ``streamer_rolling_accuracy`` and the older ``streamer_rolling_metric{metric="accuracy"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Labels = Mapping[str, str]
Samples = Mapping[str, Sequence[tuple[Labels, float]]]  # sample name -> [(labels, value)]

QUANTILES = (0.5, 0.9, 0.99)
LATENCY_HISTOGRAMS = (
    ("end to end", "streamer_end_to_end_latency_seconds", ()),
    ("batch scoring", "streamer_batch_scoring_seconds", ()),
    ("inference", "streamer_inference_seconds", ("model", "version")),
)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One worker's ``/metrics`` at ``at_s`` (seconds, any monotonic clock); ``error`` when it did not answer."""

    target: str
    at_s: float
    samples: Samples = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    target: str
    up: bool
    error: str | None = None
    requests_per_s: float | None = None
    lag_messages: float = 0.0
    partitions: int = 0
    inflight_batches: float = 0.0


@dataclass(frozen=True, slots=True)
class RequestRow:
    model: str
    version: str
    predictions_total: float
    dead_letters_total: float
    predictions_per_s: float | None
    dead_letters_per_s: float | None


@dataclass(frozen=True, slots=True)
class LatencyRow:
    """Quantiles in seconds (None: no observation); ``recent``: over the interval, else since the start."""

    name: str
    quantiles: tuple[float | None, ...]
    count: float
    recent: bool


@dataclass(frozen=True, slots=True)
class ReasonRow:
    reason: str
    total: float
    per_s: float | None


@dataclass(frozen=True, slots=True)
class AccuracyRow:
    model: str
    version: str
    window: str
    accuracy: float
    labels: float | None


@dataclass(frozen=True, slots=True)
class View:
    workers: list[WorkerRow]
    requests: list[RequestRow]
    latencies: list[LatencyRow]
    dead_letters: list[ReasonRow]
    accuracy: list[AccuracyRow]
    interval_s: float | None  # between the two scrapes the rates are over (None: one scrape only)

    @property
    def up(self) -> int:
        return sum(w.up for w in self.workers)


# ------------------------------------------------------------------------------------------------ maths


def counter_rate(before: float | None, now: float, seconds: float) -> float | None:
    """Per-second increase of a counter; a decrease is a reset (all of ``now`` is new). None: no rate yet."""
    if before is None or seconds <= 0:
        return None
    increase = now - before if now >= before else now
    return increase / seconds


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets, ``+Inf`` included, as Prometheus
    computes it: linear within the bucket holding rank ``q * total`` (the first bucket starts at 0); a rank in
    the ``+Inf`` bucket gives the highest finite bound. None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


# ------------------------------------------------------------------------------------------------ view


def _key(labels: Labels, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(labels.get(n, "") for n in names)


def _series(samples: Samples, name: str, names: Sequence[str]) -> dict[tuple[str, ...], float]:
    """``name``'s samples keyed by the values of ``names``, summed over the other labels."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples.get(name, ()):
        key = _key(labels, names)
        out[key] = out.get(key, 0.0) + value
    return out


def _rates(
    pairs: Sequence[tuple[Scrape | None, Scrape]], name: str, names: Sequence[str]
) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """Totals and per-second rates of a counter, per label key, summed over the workers."""
    totals: dict[tuple[str, ...], float] = {}
    rates: dict[tuple[str, ...], float] = {}
    for before, now in pairs:
        current = _series(now.samples, name, names)
        previous = _series(before.samples, name, names) if before is not None else None
        seconds = now.at_s - before.at_s if before is not None else 0.0
        for key, value in current.items():
            totals[key] = totals.get(key, 0.0) + value
            if previous is None:
                continue
            rate = counter_rate(previous.get(key, 0.0), value, seconds)
            if rate is not None:
                rates[key] = rates.get(key, 0.0) + rate
    return totals, rates


def _buckets(samples: Samples, name: str, names: Sequence[str]) -> dict[tuple[str, ...], dict[float, float]]:
    out: dict[tuple[str, ...], dict[float, float]] = {}
    for labels, value in samples.get(f"{name}_bucket", ()):
        bound = float(labels.get("le", "+Inf"))
        per_key = out.setdefault(_key(labels, names), {})
        per_key[bound] = per_key.get(bound, 0.0) + value
    return out


def _latencies(pairs: Sequence[tuple[Scrape | None, Scrape]]) -> list[LatencyRow]:
    rows: list[LatencyRow] = []
    with_rates = _has_rates(pairs)
    for title, name, names in LATENCY_HISTOGRAMS:
        recent: dict[tuple[str, ...], dict[float, float]] = {}
        since_start: dict[tuple[str, ...], dict[float, float]] = {}
        for before, now in pairs:
            current = _buckets(now.samples, name, names)
            previous = _buckets(before.samples, name, names) if before is not None else {}
            for key, buckets in current.items():
                old = previous.get(key, {})
                reset = any(count < old.get(bound, 0.0) for bound, count in buckets.items())
                for bound, count in buckets.items():
                    delta = count if reset else count - old.get(bound, 0.0)
                    target = recent.setdefault(key, {})
                    target[bound] = target.get(bound, 0.0) + delta
                    total = since_start.setdefault(key, {})
                    total[bound] = total.get(bound, 0.0) + count
        for key in sorted(since_start):
            window = recent.get(key, {})
            use_recent = with_rates and max(window.values(), default=0.0) > 0
            chosen = window if use_recent else since_start[key]
            buckets = sorted(chosen.items())
            label = title if not names else f"{title} {key[0]}@{key[1]}"
            count = buckets[-1][1] if buckets else 0.0
            quantiles = tuple(histogram_quantile(q, buckets) for q in QUANTILES)
            rows.append(LatencyRow(label, quantiles, count, use_recent))
    return rows


def _accuracy(scrapes: Sequence[Scrape]) -> list[AccuracyRow]:
    names = ("model", "version", "window")
    accuracy: dict[tuple[str, ...], float] = {}
    labels: dict[tuple[str, ...], float] = {}
    for scrape in scrapes:  # shared values: the first worker that has one gives it
        found: dict[tuple[str, ...], float] = {}
        counts: dict[tuple[str, ...], float] = {}
        for sample_labels, value in scrape.samples.get("streamer_rolling_accuracy", ()):
            found[_key(sample_labels, names)] = value
        for sample_labels, value in scrape.samples.get("streamer_rolling_labels", ()):
            counts[_key(sample_labels, names)] = value
        for sample_labels, value in scrape.samples.get("streamer_rolling_metric", ()):
            metric = sample_labels.get("metric")
            if metric == "accuracy":
                found.setdefault(_key(sample_labels, names), value)
            elif metric == "count":
                counts.setdefault(_key(sample_labels, names), value)
        for key, value in found.items():
            if not math.isnan(value):
                accuracy.setdefault(key, value)
        for key, value in counts.items():
            labels.setdefault(key, value)
    order = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def sort_key(key: tuple[str, ...]) -> tuple[str, int, float]:
        window = key[2]
        try:
            seconds = float(window[:-1]) * order.get(window[-1:], 1)
        except ValueError:
            seconds = math.inf
        version = int(key[1]) if key[1].isdigit() else 0
        return key[0], version, seconds

    return [AccuracyRow(*key, accuracy[key], labels.get(key)) for key in sorted(accuracy, key=sort_key)]


def build_view(previous: Sequence[Scrape] | None, current: Sequence[Scrape]) -> View:
    """The frame of ``streamer top`` for ``current`` (one scrape per worker), with rates over the time since
    ``previous`` (the same workers' earlier scrapes, matched by target; None or a missing target: totals only)."""
    before_of = {s.target: s for s in previous or () if s.error is None}
    live = [s for s in current if s.error is None]
    pairs = [(before_of.get(s.target), s) for s in live]

    workers: list[WorkerRow] = []
    for scrape in current:
        if scrape.error is not None:
            workers.append(WorkerRow(scrape.target, False, scrape.error))
            continue
        _, rates = _rates([(before_of.get(scrape.target), scrape)], "streamer_requests_total", ())
        lag = _series(scrape.samples, "streamer_consumer_lag_messages", ("partition",))
        depth = _series(scrape.samples, "streamer_reorder_buffer_depth_messages", ("partition",))
        inflight = sum(v for _, v in scrape.samples.get("streamer_inflight_batches", ()))
        partitions = len(lag.keys() | depth.keys())
        workers.append(WorkerRow(scrape.target, True, None, rates.get(()), sum(lag.values()), partitions, inflight))

    with_rates = _has_rates(pairs)
    totals, rates = _rates(pairs, "streamer_requests_total", ("model", "version", "outcome"))
    models = sorted({(m, v) for m, v, _ in totals}, key=lambda mv: (mv[0], int(mv[1]) if mv[1].isdigit() else 0))
    requests = [
        RequestRow(
            model or "(no model)",  # dead letters of requests that named no model that could be read
            version or "-",
            totals.get((model, version, "prediction"), 0.0),
            totals.get((model, version, "dead_letter"), 0.0),
            rates.get((model, version, "prediction"), 0.0) if with_rates else None,
            rates.get((model, version, "dead_letter"), 0.0) if with_rates else None,
        )
        for model, version in models
        # a version that has answered nothing yet (its counters start at 0) is not a row
        if totals.get((model, version, "dead_letter"), 0.0) or totals.get((model, version, "prediction"), 0.0)
    ]

    reason_totals, reason_rates = _rates(pairs, "streamer_dead_letters_total", ("reason",))
    dead_letters = [
        ReasonRow(reason, total, reason_rates.get((reason,), 0.0) if with_rates else None)
        for (reason,), total in sorted(reason_totals.items(), key=lambda kv: (-kv[1], kv[0]))
    ]

    intervals = [now.at_s - before.at_s for before, now in pairs if before is not None]
    return View(
        workers,
        requests,
        _latencies(pairs),
        dead_letters,
        _accuracy(live),
        max(intervals) if intervals else None,
    )


def _has_rates(pairs: Sequence[tuple[Scrape | None, Scrape]]) -> bool:
    """Whether any worker has an earlier scrape (so rates exist)."""
    return any(before is not None for before, _ in pairs)
