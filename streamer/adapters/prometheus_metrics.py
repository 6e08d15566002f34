"""Prometheus metrics as observer hooks: the data path and the services call ``on_*``; only the
``prometheus_*`` adapters touch a metric.

One ``WorkerMetrics`` per worker (or ``streamer serve``) owns a ``CollectorRegistry`` and is every observer at
once. It is assembled from one module per concept:

- ``prometheus_families``: the declarations (names, help, labels, buckets; the series that start at 0);
- ``prometheus_histograms``: the bulk histogram collector (a batch observed in one numpy pass, public API only);
- ``prometheus_data_path``: the pipeline's hooks (per batch, never per row);
- ``prometheus_service_hooks``: the services' and on-demand serving's hooks.

The declarations' constants are re-exported here, where the tests and the docs checks read them.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamer.adapters.prometheus_data_path import DataPathHooks
from streamer.adapters.prometheus_families import (
    BATCH_BUCKETS,
    LABEL_OUTCOMES,
    LATENCY_BUCKETS_S,
    MODEL_CHANGES,
    MODEL_EVENT_TYPES,
    OIP_STATUSES,
    REDIS_OPERATIONS,
    REQUEST_OUTCOMES,
    ROLLING,
    SCORE_BUCKETS,
    SHADOW_OUTCOMES,
)
from streamer.adapters.prometheus_histograms import observe_many
from streamer.adapters.prometheus_service_hooks import ServiceHooks

__all__ = [
    "BATCH_BUCKETS",
    "CONTENT_TYPE",
    "LABEL_OUTCOMES",
    "LATENCY_BUCKETS_S",
    "MODEL_CHANGES",
    "MODEL_EVENT_TYPES",
    "OIP_STATUSES",
    "REDIS_OPERATIONS",
    "REQUEST_OUTCOMES",
    "ROLLING",
    "SCORE_BUCKETS",
    "SHADOW_OUTCOMES",
    "WorkerMetrics",
    "observe_many",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class WorkerMetrics(DataPathHooks, ServiceHooks):
    """Every metric of one worker and every hook that updates them (``pipeline.PipelineObserver``, the
    services' observers, ``oip.http``'s observer)."""

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
