"""Prometheus conventions of the worker's metrics: counters whose label values are known in advance start at 0
(at start, or when a model version or partition appears), and the rolling evaluation is one gauge per quantity,
so that a sum or an average over a metric's labels means something."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from streamer.adapters.prometheus_metrics import (
    LABEL_OUTCOMES,
    MODEL_CHANGES,
    MODEL_EVENT_TYPES,
    REDIS_OPERATIONS,
    REQUEST_OUTCOMES,
    ROLLING,
    SHADOW_OUTCOMES,
    WorkerMetrics,
)
from streamer.config import EvaluationSettings
from streamer.core.errors import DEAD_LETTER_REASONS
from streamer.core.evaluation import DEFAULT_WINDOWS, Metrics, WindowSpec
from streamer.services.quality_monitor import ROLLING_QUANTITIES, QualityMonitor
from tests.rolling_evaluation import RollingEvaluation

SOURCE = Path(__file__).resolve().parents[2] / "streamer"


def exported(metrics: WorkerMetrics) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, parsed back: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


def zero(samples: dict, name: str, **labels: str) -> bool:
    return samples.get((name, frozenset(labels.items()))) == 0.0


def test_a_fresh_registry_exposes_the_known_counters_at_zero() -> None:
    samples = exported(WorkerMetrics())
    for reason in DEAD_LETTER_REASONS:
        assert zero(samples, "streamer_dead_letters_total", reason=reason), reason
    for outcome in LABEL_OUTCOMES:
        assert zero(samples, "streamer_labels_total", outcome=outcome), outcome
    for kind in MODEL_EVENT_TYPES:
        assert zero(samples, "streamer_model_events_total", type=kind), kind
    for operation in REDIS_OPERATIONS:
        assert zero(samples, "streamer_redis_errors_total", operation=operation), operation
    assert zero(samples, "streamer_requests_total", model="", version="", outcome="dead_letter")
    for name in ("streamer_prediction_log_dropped_total", "streamer_dead_letters_cut_total"):
        assert zero(samples, name)


def test_a_loaded_version_partition_and_online_model_start_their_counters_at_zero() -> None:
    metrics = WorkerMetrics()
    metrics.on_models(
        [("fraud", 1, True), ("fraud", 2, False)], [("fraud", 1, "champion", 1.0), ("fraud", 2, "shadow", 1.0)]
    )
    metrics.on_lag(3, 10)
    metrics.on_online_weights("fraud-online", "1", None, 0.5)
    samples = exported(metrics)
    for version in ("1", "2"):
        for outcome in REQUEST_OUTCOMES:
            assert zero(samples, "streamer_requests_total", model="fraud", version=version, outcome=outcome)
    for change in MODEL_CHANGES:
        assert zero(samples, "streamer_model_changes_total", model="fraud", change=change)
    for outcome in SHADOW_OUTCOMES.values():
        assert zero(samples, "streamer_shadow_predictions_total", model="fraud", version="2", outcome=outcome)
    assert not any(k[0] == "streamer_shadow_predictions_total" and ("version", "1") in k[1] for k in samples)
    assert zero(samples, "streamer_recovered_skipped_total", partition="3")
    assert zero(samples, "streamer_stalled_partitions_total", partition="3")
    assert zero(samples, "streamer_online_updates_total", model="fraud-online", version="1")
    # a hot reload removing version 2 keeps its counters (a vanished counter would read as a reset later)
    metrics.on_model_change("fraud", "removed")
    metrics.on_models([("fraud", 1, True)], [("fraud", 1, "champion", 1.0)])
    samples = exported(metrics)
    assert samples[("streamer_model_changes_total", frozenset({"model": "fraud", "change": "removed"}.items()))] == 1
    assert zero(samples, "streamer_requests_total", model="fraud", version="2", outcome="prediction")


def test_every_quantity_of_the_evaluation_is_its_own_gauge() -> None:
    assert set(ROLLING_QUANTITIES) == set(ROLLING) == {f.name for f in dataclasses.fields(Metrics)}
    names = [name for name, _ in ROLLING.values()]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"streamer_rolling_[a-z_]+", n) for n in names)
    metrics = WorkerMetrics()
    values = {"count": 40, "accuracy": 0.9, "log_loss": 0.3, "precision": 0.5, "recall": 0.25, "auc": 0.8, "rmse": 0.2}
    metrics.on_rolling("fraud", "1", "5m", values)
    metrics.on_rolling("fraud", "1", "5m", dict.fromkeys(values, math.nan) | {"count": 0})  # no labels in the window
    samples = exported(metrics)
    for quantity, (name, _) in ROLLING.items():
        labels = frozenset({"model": "fraud", "version": "1", "window": "5m"}.items())
        assert samples[(name, labels)] == (0 if quantity == "count" else values[quantity]), name
    assert not any(name == "streamer_rolling_metric" for name, _ in samples)


def test_the_quality_monitor_exports_each_quantity_of_each_window() -> None:
    """From the shared evaluation (a stand-in for Redis) to one gauge per quantity, per version and window."""
    evaluation = RollingEvaluation(DEFAULT_WINDOWS)
    evaluation.update(1000.0, np.array([0.9, 0.2, 0.7, 0.4]), np.array([1, 0, 0, 1]))

    class Store:
        windows = DEFAULT_WINDOWS

        def metrics(self, name: str, version: str, window: WindowSpec, now: float) -> Metrics:
            return evaluation.get(now, window)

    catalog = SimpleNamespace(cards={"fraud": {1: None}}, serving_version=lambda name: 1)
    metrics = WorkerMetrics()
    monitor = QualityMonitor(EvaluationSettings(), lambda: catalog, Store(), None, None, metrics)  # type: ignore[arg-type]
    monitor.check_once(now=1001.0)
    samples = exported(metrics)
    for window in DEFAULT_WINDOWS:
        want = evaluation.get(1001.0, window)
        labels = frozenset({"model": "fraud", "version": "1", "window": window.name}.items())
        for quantity, (name, _) in ROLLING.items():
            assert samples[(name, labels)] == float(getattr(want, quantity)), (name, window.name)
    assert samples[("streamer_rolling_labels", labels)] == 4


def test_the_known_label_values_are_the_ones_the_code_uses() -> None:
    """The lists that start at 0 are the model-event types the worker emits and its Redis operations."""
    emitting = ("wiring/learning.py", "services/quality_monitor.py", "services/rollout.py", "services/concept_drift.py")
    kinds = {
        kind
        for path in emitting
        for kind in re.findall(r'"((?:model|rollout|accuracy|feature|concept)-[a-z-]+)"', (SOURCE / path).read_text())
    }
    assert kinds == set(MODEL_EVENT_TYPES)
    operations = {
        operation
        for path in SOURCE.rglob("*.py")
        for operation in re.findall(r'on_redis_error\(\s*"([a-z_]+)"', path.read_text())
    }
    assert operations == set(REDIS_OPERATIONS)


def test_traffic_shares_sum_to_one_per_model_and_a_shadow_has_its_own_gauge() -> None:
    """Summing streamer_model_traffic_share over versions and roles means something: the whole model's keys.
    A challenger in shadow answers nobody, so it is not a share of traffic but of the champion's requests."""
    metrics = WorkerMetrics()
    versions = [("fraud", 1, True), ("fraud", 2, False), ("fraud", 3, False)]
    shares = [("fraud", 1, "champion", 0.7), ("fraud", 2, "canary", 0.3), ("fraud", 3, "shadow", 1.0)]
    metrics.on_models(versions, shares)
    samples = exported(metrics)
    traffic = {dict(k[1])["version"]: v for k, v in samples.items() if k[0] == "streamer_model_traffic_share"}
    assert traffic == {"1": 0.7, "2": 0.3}
    shadow = {dict(k[1])["version"]: v for k, v in samples.items() if k[0] == "streamer_model_shadow_share"}
    assert shadow == {"1": 0.0, "2": 0.0, "3": 1.0}


def test_a_declared_graphs_stage_and_enrichment_counters_start_at_zero() -> None:
    """The shipped fraud graph (an enrichment, a transform, a two-phase cascade, rules): every stage label a run
    reports exists at 0 from the graph's load, so an alert on an enrichment's misses never meets no series."""
    from streamer.adapters.graph_repository import read_graphs
    from streamer.core.graph.execution import stage_labels

    graph = next(g for g in read_graphs(SOURCE.parent / "examples" / "graphs") if g.name == "fraud-graph")
    metrics = WorkerMetrics()
    metrics.on_models([], [], [graph])
    samples = exported(metrics)
    labels = stage_labels(graph)
    assert any(stage.endswith("/then") for stage, _ in labels) and any(policy for _, policy in labels)
    for stage, on_failure in labels:
        enrich = on_failure is not None
        assert zero(samples, "streamer_graph_stage_rows_total", graph="fraud-graph", stage=stage), stage
        assert zero(samples, "streamer_graph_stage_seconds_total", graph="fraud-graph", stage=stage), stage
        assert zero(samples, "streamer_enrichment_misses_total", graph="fraud-graph", stage=stage) == enrich
        failed_rows = zero(
            samples, "streamer_enrichment_failed_rows_total", graph="fraud-graph", stage=stage, on_failure=on_failure
        )
        assert failed_rows == enrich, stage
