"""Histograms observed a whole batch at a time, exported through prometheus_client's public collector API.

prometheus_client's ``Histogram`` takes one value per locked ``observe`` call, and the only way to add a batch
at once would be writing its private ``_buckets`` and ``_sum`` (which an upgrade may rename without notice). A
``BulkHistogram`` owns its counts instead: per series, one numpy array of per-bucket counts and a float sum,
updated under one lock per batch (one ``searchsorted`` + ``bincount``), and turned into a
``HistogramMetricFamily`` when the registry is scraped (``collect``, the documented custom-collector route).

Invariants, the same as prometheus_client's ``Histogram.observe`` (``tests/contract/test_prometheus_client.py``
renders both and requires the same text):

1. A value is counted in the first bucket whose upper bound is >= the value (a value equal to a bound is in
   it: Prometheus' ``le``); +Inf is always the last bound; NaN is in no bucket and makes the sum NaN.
2. Exported buckets are cumulative, ``_count`` equals the +Inf bucket, and no count ever decreases.
3. A histogram without labels has its one series (at 0) from creation; with labels, a series exists from the
   first ``labels(...)`` call, so a caller can start a known series at 0.
4. A scrape sees every batch whole or not at all (counts and sum are read under the series' lock).

What differs: no ``<name>_created`` sample (``HistogramMetricFamily`` carries none, and nothing reads it),
and no exemplars.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Below this many values a Python loop with ``bisect`` beats the fixed cost of the numpy calls.
SMALL_BATCH = 8


class HistogramSeries:
    """One label combination of a ``BulkHistogram``: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("_bounds", "_bounds_array", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds  # ascending, +Inf last
        self._bounds_array = np.asarray(bounds, dtype=np.float64)
        self._counts = np.zeros(len(bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """One value (invariant 1)."""
        value = float(value)
        with self._lock:
            self._sum += value
            if value == value:  # NaN: in no bucket
                self._counts[bisect.bisect_left(self._bounds, value)] += 1

    def observe_many(self, values: np.ndarray) -> None:
        """Every value of ``values`` (any shape, converted to float64), as ``observe`` one by one would."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        if values.size < SMALL_BATCH:
            with self._lock:
                for value in values.tolist():
                    self._sum += value
                    if value == value:
                        self._counts[bisect.bisect_left(self._bounds, value)] += 1
            return
        # NaN sorts past the last bound: its index is len(bounds), cut off by the slice.
        indexes = np.searchsorted(self._bounds_array, values, side="left")
        counts = np.bincount(indexes, minlength=len(self._bounds))[: len(self._bounds)]
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def snapshot(self) -> tuple[list[float], float]:
        """(cumulative bucket counts, sum), consistent with each other (invariant 4)."""
        with self._lock:
            counts = self._counts.copy()
            total = self._sum
        return np.cumsum(counts).astype(np.float64).tolist(), total


class BulkHistogram:
    """A histogram metric family registered in ``registry``: ``labels(*values)`` gives a series (created at
    0 on first use); without label names the histogram is its own single series (``observe``,
    ``observe_many``). Bucket bounds are given without +Inf (it is appended), strictly ascending."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(set(bounds)) or not bounds or math.isnan(bounds[0]):
            raise ValueError(f"{name}: bucket bounds must be non-empty and strictly ascending, got {buckets!r}")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(bounds)
        self._le = [floatToGoString(b) for b in self.bounds]
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        self._lock = threading.Lock()
        if not self.labelnames:
            self._series[()] = HistogramSeries(self.bounds)
        registry.register(self)

    def labels(self, *values: object) -> HistogramSeries:
        """The series of these label values (in ``labelnames`` order), created at 0 if new."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values!r}")
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, HistogramSeries(self.bounds))
        return series

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def observe_many(self, values: np.ndarray) -> None:
        self.labels().observe_many(values)

    # the registry's side (prometheus_client.registry.Collector) -------------------------------------------

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The family without samples: lets the registry refuse a second metric of the same name."""
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = list(self._series.items())
        for values, one in series:
            cumulative, total = one.snapshot()
            family.add_metric(list(values), list(zip(self._le, cumulative, strict=True)), total)
        yield family


def observe_many(histogram: HistogramSeries | BulkHistogram | Histogram, values: np.ndarray) -> None:
    """Every value of ``values`` into ``histogram``: in bulk for ours; one ``observe`` per value (its public
    API, nothing private) for a prometheus_client ``Histogram``."""
    if isinstance(histogram, HistogramSeries | BulkHistogram):
        histogram.observe_many(values)
        return
    for value in np.asarray(values, dtype=np.float64).ravel().tolist():
        histogram.observe(value)
