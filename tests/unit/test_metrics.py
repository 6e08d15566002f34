"""The Prometheus observer: bulk histogram updates equal one observe per value; known series start at 0."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streamer.adapters.prometheus_metrics import LATENCY_BUCKETS_S, WorkerMetrics, observe_many
from streamer.core.errors import DEAD_LETTER_REASONS


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


values = st.lists(st.floats(-1, 10, allow_nan=False) | st.sampled_from(LATENCY_BUCKETS_S), max_size=50)


@given(values)
def test_observe_many_equals_observe_one_at_a_time(batch: list[float]) -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    h_one = Histogram("h", "h", buckets=LATENCY_BUCKETS_S, registry=one)
    h_many = Histogram("h", "h", buckets=LATENCY_BUCKETS_S, registry=many)
    for value in batch:
        h_one.observe(value)
    observe_many(h_many, np.asarray(batch, dtype=np.float64))
    got, want = samples(many), samples(one)
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= 1e-9 * max(1.0, abs(want[key])), key


def test_counters_with_known_labels_start_at_zero() -> None:
    page = WorkerMetrics().exposition().decode()
    for reason in DEAD_LETTER_REASONS:
        assert f'streamer_dead_letters_total{{reason="{reason}"}} 0.0' in page
    for outcome in ("joined", "unknown", "duplicate", "dead_letter"):
        assert f'streamer_labels_total{{outcome="{outcome}"}} 0.0' in page


def test_a_partition_given_up_takes_its_lag_and_reorder_depth_series_with_it() -> None:
    """The old owner of a revoked or lost partition must not go on exporting its last lag: a sum over workers
    (the lag alert, an autoscaler) would count the partition twice. Its counters stay."""
    metrics = WorkerMetrics()
    for partition in (1, 3):
        metrics.on_lag(partition, 10 * partition)
        metrics.on_depth(partition, partition)
    metrics.on_partitions_gone([3, 7])  # 7: never reported by this worker
    page = metrics.exposition().decode()
    assert 'streamer_consumer_lag_messages{partition="1"} 10.0' in page
    assert 'streamer_reorder_buffer_depth_messages{partition="1"} 1.0' in page
    assert 'partition="3"} 30.0' not in page and 'streamer_reorder_buffer_depth_messages{partition="3"}' not in page
    assert 'streamer_consumer_lag_messages{partition="3"}' not in page
    assert 'streamer_recovered_skipped_total{partition="3"} 0.0' in page  # counters stay
    metrics.on_lag(3, 5)  # the partition came back
    assert 'streamer_consumer_lag_messages{partition="3"} 5.0' in metrics.exposition().decode()
