"""What ``adapters.prometheus_histograms`` relies on in prometheus_client, checked against the installed version.

The bulk histograms reach into nothing private: they are a custom collector (``describe``/``collect``) yielding
``HistogramMetricFamily`` with ``le`` labels formatted by ``utils.floatToGoString``. If an upgrade changes any
of that, the text a worker exposes would drift from what a prometheus_client ``Histogram`` exposes; these tests
render both from the same observations and require the same text, so the drift fails here, loudly, and not on a
dashboard. The version pin in pyproject.toml is the range these tests were run against.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamer.adapters.prometheus_families import BATCH_BUCKETS, LATENCY_BUCKETS_S
from streamer.adapters.prometheus_histograms import BulkHistogram

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
LABELS = ("model", "version")


def rendered(registry: CollectorRegistry) -> list[str]:
    """The exposition's lines without the ``_created`` gauges (the one documented difference)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def same_text(bulk: list[str], reference: list[str]) -> None:
    """Equal line by line; a ``_sum`` value may differ in its last bits (numpy sums pairwise)."""
    assert len(bulk) == len(reference), "\n".join(bulk) + "\n---\n" + "\n".join(reference)
    for got, want in zip(bulk, reference, strict=True):
        name, _, value = want.rpartition(" ")
        if re.fullmatch(r"\w+_sum(\{.*\})?", name):
            got_name, _, got_value = got.rpartition(" ")
            assert got_name == name
            assert math.isclose(float(got_value), float(value), rel_tol=1e-9, abs_tol=1e-12), (got, want)
        else:
            assert got == want


values = st.lists(
    st.floats(-1, 5000, allow_nan=False) | st.sampled_from(LATENCY_BUCKETS_S + BATCH_BUCKETS), max_size=60
)


@given(batches=st.lists(values, max_size=4))
def test_a_bulk_histogram_exposes_what_a_prometheus_histogram_does(batches: list[list[float]]) -> None:
    """Batches of any size (the small-batch loop and the numpy pass), values on a bound, below and past all."""
    for buckets in (LATENCY_BUCKETS_S, BATCH_BUCKETS):
        ours, theirs = CollectorRegistry(), CollectorRegistry()
        bulk = BulkHistogram("streamer_x_seconds", "Help text.", buckets=buckets, registry=ours)
        reference = Histogram("streamer_x_seconds", "Help text.", buckets=buckets, registry=theirs)
        for batch in batches:
            bulk.observe_many(np.asarray(batch, dtype=np.float64))
            for value in batch:
                reference.observe(value)
        same_text(rendered(ours), rendered(theirs))


def test_labelled_series_exist_from_their_first_use_in_the_same_order() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("streamer_y_seconds", "Per model.", LABELS, buckets=LATENCY_BUCKETS_S, registry=ours)
    reference = Histogram("streamer_y_seconds", "Per model.", LABELS, buckets=LATENCY_BUCKETS_S, registry=theirs)
    assert rendered(ours) == rendered(theirs)  # no series before a first labels(...)
    bulk.labels("fraud", "2")
    reference.labels("fraud", "2")
    bulk.labels("fraud", 1).observe(0.004)
    reference.labels("fraud", 1).observe(0.004)
    bulk.labels("fraud", "1").observe_many(np.linspace(0, 0.3, 50))
    for value in np.linspace(0, 0.3, 50).tolist():
        reference.labels("fraud", "1").observe(value)
    same_text(rendered(ours), rendered(theirs))


def test_nan_is_in_no_bucket_and_poisons_the_sum_like_observe() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("streamer_z", "z", buckets=(1.0, 2.0), registry=ours)
    reference = Histogram("streamer_z", "z", buckets=(1.0, 2.0), registry=theirs)
    bulk.observe_many(np.array([0.5, math.nan] + [1.5] * 10))
    bulk.observe(math.nan)
    for value in [0.5, math.nan] + [1.5] * 10 + [math.nan]:
        reference.observe(value)
    assert rendered(ours) == rendered(theirs)


def test_the_registry_refuses_a_second_family_of_the_same_name() -> None:
    """``describe`` is what the registry reads for names: a duplicate fails at declaration, not at a scrape."""
    registry = CollectorRegistry()
    BulkHistogram("streamer_dup_seconds", "one", buckets=(1.0,), registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("streamer_dup_seconds", "two", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        BulkHistogram("streamer_dup_seconds", "three", buckets=(1.0,), registry=registry)


def test_the_installed_prometheus_client_is_in_the_pinned_range() -> None:
    """The pin is the range this suite ran against; an upgrade past it is a deliberate act that reruns it."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "prometheus-client"]
    installed = importlib.metadata.version("prometheus-client")
    assert pin.specifier.contains(installed), f"prometheus-client {installed} is outside the tested pin {pin}"
