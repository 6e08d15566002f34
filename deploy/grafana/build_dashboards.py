"""Writes the shipped Grafana dashboards (`dashboards/*.json`) from the panel lists below.

    .venv/bin/python deploy/grafana/build_dashboards.py

Edit the panels here and re-run; the JSON files are committed so that Grafana's provisioning reads them as is.
Every query reads a metric the worker exports (a test checks it against the worker's registry, and runs each
query through a real Prometheus scraping a real worker).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

OVERVIEW = [
    ("Requests per second by outcome", "sum by (outcome) (rate(streamer_requests_total[1m]))", "reqps"),
    ("Dead letters per second by reason", "sum by (reason) (rate(streamer_dead_letters_total[1m]))", "reqps"),
    (
        "End-to-end latency p50 / p99 (request timestamp to produce)",
        [
            ("p50", "histogram_quantile(0.5, sum by (le) (rate(streamer_end_to_end_latency_seconds_bucket[1m])))"),
            ("p99", "histogram_quantile(0.99, sum by (le) (rate(streamer_end_to_end_latency_seconds_bucket[1m])))"),
        ],
        "s",
    ),
    (
        "Where latency goes: p99 per stage of a sampled request (each from the stage before)",
        "histogram_quantile(0.99, sum by (le, stage) (rate(streamer_stage_latency_seconds_bucket[1m])))",
        "s",
    ),
    (
        "Event-loop lag p50 / p99 (how late a scheduled callback runs)",
        [
            ("p50", "histogram_quantile(0.5, sum by (le) (rate(streamer_event_loop_lag_seconds_bucket[1m])))"),
            ("p99", "histogram_quantile(0.99, sum by (le) (rate(streamer_event_loop_lag_seconds_bucket[1m])))"),
        ],
        "s",
    ),
    (
        "Consumer lag by partition (approximate on the embedded broker)",
        "sum by (partition) (streamer_consumer_lag_messages)",
        "short",
    ),
    (
        "Batch size p50 / p99",
        [
            ("p50", "histogram_quantile(0.5, sum by (le) (rate(streamer_batch_size_messages_bucket[1m])))"),
            ("p99", "histogram_quantile(0.99, sum by (le) (rate(streamer_batch_size_messages_bucket[1m])))"),
        ],
        "short",
    ),
    (
        "Batch wait and scoring time p99",
        [
            ("wait", "histogram_quantile(0.99, sum by (le) (rate(streamer_batch_wait_seconds_bucket[1m])))"),
            ("scoring", "histogram_quantile(0.99, sum by (le) (rate(streamer_batch_scoring_seconds_bucket[1m])))"),
        ],
        "s",
    ),
    (
        "Inference time p99 by model version",
        "histogram_quantile(0.99, sum by (le, model, version) (rate(streamer_inference_seconds_bucket[1m])))",
        "s",
    ),
    ("Reorder-buffer depth by partition", "sum by (partition) (streamer_reorder_buffer_depth_messages)", "short"),
    ("In-flight batches", "sum(streamer_inflight_batches)", "short"),
    (
        "Requests answered before a restart (read-back, not written again)",
        "sum(increase(streamer_recovered_skipped_total[5m])) or vector(0)",
        "short",
    ),
    (
        "On-demand (OIP v2 HTTP) requests per second by model, version and status",
        "sum by (model, version, status) (rate(streamer_oip_requests_total[1m]))",
        "reqps",
    ),
    (
        "On-demand request latency p50 / p99 by model",
        [
            (
                "p50 {{model}}",
                "histogram_quantile(0.5, sum by (le, model) (rate(streamer_oip_request_duration_seconds_bucket[1m])))",
            ),
            (
                "p99 {{model}}",
                "histogram_quantile(0.99, sum by (le, model) (rate(streamer_oip_request_duration_seconds_bucket[1m])))",
            ),
        ],
        "s",
    ),
    (
        "On-demand requests per ONNX call (mean micro-batch: the batching gain)",
        "sum(rate(streamer_oip_batch_size_requests_sum[1m])) / sum(rate(streamer_oip_batch_size_requests_count[1m]))",
        "short",
    ),
]

MODEL_QUALITY = [
    (
        "Models loaded (serving=1 is the champion)",
        "sum by (model, version, serving) (streamer_model_info)",
        "short",
    ),
    (
        "Traffic share by version and role (champion, canary); challengers in shadow",
        [
            ("{{model}} {{version}} {{role}}", "max by (model, version, role) (streamer_model_traffic_share)"),
            ("{{model}} {{version}} shadow", "max by (model, version) (streamer_model_shadow_share)"),
        ],
        "percentunit",
    ),
    (
        "Hot-reload changes (loaded, refused, removed)",
        "sum by (model, change) (increase(streamer_model_changes_total[15m])) or vector(0)",
        "short",
    ),
    (
        "Predictions per second by model version",
        'sum by (model, version) (rate(streamer_requests_total{outcome="prediction"}[1m]))',
        "reqps",
    ),
    (
        "Predicted class share by model version",
        "sum by (model, version, label) (rate(streamer_predicted_labels_total[5m]))"
        " / ignoring(label) group_left sum by (model, version) (rate(streamer_predicted_labels_total[5m]))",
        "percentunit",
    ),
    (
        "Score median and p90 by model version (drift without labels)",
        [
            (
                "p50 {{model}}@{{version}}",
                "histogram_quantile(0.5, sum by (le, model, version) (rate(streamer_prediction_score_bucket[5m])))",
            ),
            (
                "p90 {{model}}@{{version}}",
                "histogram_quantile(0.9, sum by (le, model, version) (rate(streamer_prediction_score_bucket[5m])))",
            ),
        ],
        "percentunit",
    ),
    (
        "Dead-letter share by model version",
        'sum by (model, version) (rate(streamer_requests_total{outcome="dead_letter"}[5m]))'
        " / sum by (model, version) (rate(streamer_requests_total[5m]))",
        "percentunit",
    ),
    (
        "Rolling accuracy by model version and window (all workers, from labels)",
        "max by (model, version, window) (streamer_rolling_accuracy)",
        "percentunit",
    ),
    (
        "Rolling log loss by model version and window",
        "max by (model, version, window) (streamer_rolling_log_loss)",
        "short",
    ),
    (
        "Rolling AUC by model version and window",
        "max by (model, version, window) (streamer_rolling_auc)",
        "percentunit",
    ),
    (
        "Serving version under the accuracy floor (1 = under)",
        [
            ("{{model}}@{{version}}", "max by (model, version) (streamer_accuracy_below_floor)"),
            ("floor", "max(streamer_accuracy_floor)"),
        ],
        "short",
    ),
    ("Labels per second by outcome", "sum by (outcome) (rate(streamer_labels_total[1m]))", "reqps"),
    (
        "Online-model updates per second",
        "sum by (model, version) (rate(streamer_online_updates_total[1m]))",
        "reqps",
    ),
    (
        "Online weights: shared updates and staleness",
        [
            ("updates {{model}}@{{version}}", "max by (model, version) (streamer_online_model_updates)"),
            ("age s {{model}}@{{version}}", "max by (model, version) (streamer_online_weights_age_seconds)"),
        ],
        "short",
    ),
    (
        "Feature drift: PSI against the card's training reference",
        "max by (model, version, feature) (streamer_feature_psi)",
        "short",
    ),
    (
        "Concept drift: error rate (detector's estimate) and prequential accuracy",
        [
            ("error rate {{model}}@{{version}}", "max by (model, version) (streamer_concept_drift_error_rate)"),
            ("prequential {{model}}@{{version}}", "max by (model, version) (streamer_prequential_accuracy)"),
        ],
        "percentunit",
    ),
    (
        "Concept drift: detections (rise = drift) and adaptations of online learners",
        [
            (
                "{{direction}} {{model}}@{{version}}",
                "max by (model, version, direction) (streamer_concept_drift_detections)",
            ),
            ("adapted {{model}}@{{version}}", "max by (model, version) (streamer_concept_drift_adaptations)"),
        ],
        "short",
    ),
    (
        "Model events in the last hour by type",
        "sum by (type) (increase(streamer_model_events_total[1h])) or vector(0)",
        "short",
    ),
    (
        "Redis errors per second by operation",
        "sum by (operation) (rate(streamer_redis_errors_total[5m])) or vector(0)",
        "short",
    ),
]


def panel(index: int, title: str, queries: str | list[tuple[str, str]], unit: str) -> dict:
    targets = [(None, queries)] if isinstance(queries, str) else queries
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                **({"legendFormat": legend} if legend else {}),
            }
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": ["streamer"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def main() -> None:
    out = HERE / "dashboards"
    out.mkdir(exist_ok=True)
    for name, uid, title, panels in (
        ("overview.json", "streamer-overview", "streamer — overview", OVERVIEW),
        ("model-quality.json", "streamer-model-quality", "streamer — model quality", MODEL_QUALITY),
    ):
        (out / name).write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")


if __name__ == "__main__":
    main()
