"""The hooks of the services and of on-demand serving: model catalog changes, labels, online weights, the
rolling evaluation, drift, model events, Redis errors and Open Inference Protocol requests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streamer.adapters.prometheus_families import (
    MODEL_CHANGES,
    OIP_STATUSES,
    REQUEST_OUTCOMES,
    SHADOW_OUTCOMES,
    MetricFamilies,
)
from streamer.core.graph.execution import stage_labels
from streamer.core.graph.spec import GraphSpec


class ServiceHooks(MetricFamilies):
    def on_models(
        self,
        versions: Sequence[tuple[str, int, bool]],
        shares: Sequence[tuple[str, int, str, float]] = (),
        graphs: Iterable[GraphSpec] = (),
    ) -> None:
        """(name, version, serving) of every loaded version, and (name, version, role, share) of what serves
        traffic; replaces what was exported before (hot reload removes versions). The counters of a loaded
        version (request outcomes, hot-reload changes, a challenger's shadow outcomes) start at 0; they are
        never removed (a counter that vanished and came back would read as a reset)."""
        self.model_info.clear()
        for name, version, serving in versions:
            self.model_info.labels(name, str(version), "1" if serving else "0").set(1)
            for outcome in REQUEST_OUTCOMES:
                self.requests.labels(name, str(version), outcome)
            for change in MODEL_CHANGES:
                self.model_changes.labels(name, change)
            for status in OIP_STATUSES:
                self.oip_requests.labels(name, str(version), status)
            self.oip_latency.labels(name)
        for graph in graphs:  # a declared graph's stage counters (and its enrichments') start at 0 too
            for stage, on_failure in stage_labels(graph):
                self.stage_rows.labels(graph.name, stage)
                self.stage_seconds.labels(graph.name, stage)
                if on_failure is not None:  # an enrichment
                    self.enrichment_misses.labels(graph.name, stage)
                    self.enrichment_failures.labels(graph.name, stage)
                    self.enrichment_failed_rows.labels(graph.name, stage, on_failure)
        self.model_share.clear()
        self.shadow_share.clear()
        for name, version, _ in versions:  # every loaded version: 0 unless it shadows the champion
            self.shadow_share.labels(name, str(version)).set(0.0)
        for name, version, role, share in shares:
            if role == "shadow":
                self.shadow_share.labels(name, str(version)).set(share)
                for outcome in SHADOW_OUTCOMES.values():
                    self.shadow_predictions.labels(name, str(version), outcome)
            else:
                self.model_share.labels(name, str(version), role).set(share)

    def on_model_change(self, model: str, change: str) -> None:
        self.model_changes.labels(model, change).inc()

    def on_labels(self, counts: dict[str, int]) -> None:
        for outcome, count in counts.items():
            self.labels.labels(outcome).inc(count)

    def on_learned(self, counts: dict[tuple[str, str], int]) -> None:
        for (model, version), count in counts.items():
            self.online_updates.labels(model, version).inc(count)

    def on_redis_error(self, operation: str) -> None:
        self.redis_errors.labels(operation).inc()

    def on_prediction_log_dropped(self, count: int) -> None:
        self.prediction_log_dropped.inc(count)

    def on_online_weights(self, model: str, version: str, updates: int | None, age_s: float) -> None:
        """The weights an online model serves: shared update count (None: unchanged) and their age; the labels
        this worker learns for it start at 0."""
        self.online_updates.labels(model, version)
        if updates is not None:
            self.online_shared_updates.labels(model, version).set(updates)
        self.online_age.labels(model, version).set(age_s)

    def on_rolling(self, model: str, version: str, window: str, values: dict[str, float]) -> None:
        """``values``: quantity (a ``ROLLING`` key) -> value; unknown quantities are not exported."""
        for quantity, value in values.items():
            gauge = self.rolling.get(quantity)
            if gauge is not None and value == value:  # not NaN: an undefined value keeps the gauge's last one
                gauge.labels(model, version, window).set(value)

    def on_accuracy_floor(self, floor: float) -> None:
        self.accuracy_floor.set(floor)

    def on_below_floor(self, model: str, version: str, below: bool) -> None:
        self.below_floor.labels(model, version).set(int(below))

    def on_feature_psi(self, model: str, version: str, psi: dict[str, float]) -> None:
        for feature, value in psi.items():
            self.feature_psi.labels(model, version, feature).set(value)

    def on_model_event(self, kind: str) -> None:
        self.model_events.labels(kind).inc()

    def on_oip_request(self, model: str, version: str, status: int, seconds: float) -> None:
        self.oip_requests.labels(model, version, str(status)).inc()
        self.oip_latency.labels(model).observe(seconds)

    def on_oip_connection_closed(self, cause: str) -> None:
        self.oip_connections_closed.labels(cause).inc()

    def on_oip_batch(self, requests: int, seconds: float) -> None:
        self.oip_batch_size.observe(requests)
