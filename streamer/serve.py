"""On-demand serving wired: the OIP v2 HTTP server beside a worker's stream, or alone as ``streamer serve``.

Both score with the stream's ``score_records`` over the ``ServingModels`` set the worker serves (hot reload,
pins, canary, shadow, declared graphs), with the worker's batch policy and limits, so a row gets the same
answer on demand as through Kafka. ``streamer serve`` needs no Kafka: the model repository (watched for new
versions, like a worker's), Redis only for a graph's enrichment stages, and ``/metrics`` on its own port.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer import __version__
from streamer.adapters.prometheus_metrics import CONTENT_TYPE, WorkerMetrics
from streamer.config import Settings
from streamer.core.errors import ModelError
from streamer.core.scoring import Limits, ScoredBatch
from streamer.core.types import Records
from streamer.oip.http import OipServer
from streamer.oip.on_demand import OnDemandScorer
from streamer.serving import ServingModels

log = logging.getLogger(__name__)


def oip_server(
    settings: Settings,
    serving: ServingModels,
    score: Callable[[Records], ScoredBatch],
    metrics: WorkerMetrics,
    ready: Callable[[], bool],
    port: int | None = None,
    host: str | None = None,
    metrics_page: bool = False,
) -> OipServer:
    """The server (not started) on ``port``/``host`` (default: ``worker.oip_port``/``worker.oip_host``)."""
    scorer = OnDemandScorer(score, settings.worker.batch_policy(), metrics.on_oip_batch)
    return OipServer(
        settings.worker.oip_host if host is None else host,
        settings.worker.oip_port if port is None else port,
        lambda: serving.current,
        scorer,
        ready,
        metrics,
        (lambda: (metrics.exposition(), CONTENT_TYPE)) if metrics_page else None,
        settings.worker.max_message_bytes,
        __version__,
        max_connections=settings.worker.oip_max_connections,
        max_queued=settings.worker.oip_max_queued,
    )


@dataclass
class Standalone:
    """What ``streamer serve`` scores with, without Kafka: the model set, its metrics and the stream's score."""

    serving: ServingModels
    metrics: WorkerMetrics
    score: Callable[[Records], ScoredBatch]
    scan: Any


def standalone(settings: Settings) -> Standalone:
    from streamer.app import UNREPORTED_MAX_BYTES, entity_lookup, export_models, load_catalog
    from streamer.serving import ModelSet

    catalog, scorer, scan = load_catalog(settings)
    serving = ServingModels(ModelSet(catalog, scorer))
    metrics = WorkerMetrics()
    export_models(serving, metrics)
    worker = settings.worker
    output = settings.kafka.max_output_bytes or UNREPORTED_MAX_BYTES
    limits = Limits(worker.max_message_bytes, worker.max_rows_per_request, output)
    lookup = entity_lookup(settings, catalog)

    score = serving.batch_scorer(limits, metrics.on_inference, lookup)

    return Standalone(serving, metrics, score, scan)


def run_serve(settings: Settings, port: int, host: str | None = None) -> None:
    """``streamer serve``: the models over OIP v2 HTTP until SIGINT/SIGTERM, without Kafka."""
    built = standalone(settings)
    serving, metrics, score, scan, worker = built.serving, built.metrics, built.score, built.scan, settings.worker
    started: list[Any] = []
    if settings.models.watch:
        from streamer.services.model_watcher import ModelWatcher

        def refused(path: Path, error: ModelError) -> None:
            log.error("refused model %s@%s: %s", path.parent.name, path.name, error)
            metrics.on_model_change(path.parent.name, "refused")

        for path, error in scan.refused.items():
            refused(path, error)
        watcher = ModelWatcher(
            settings.require_models_dir(),
            serving,
            on_loaded=lambda model: metrics.on_model_change(model.card.name, "loaded"),
            on_refused=refused,
            on_removed=lambda ref: metrics.on_model_change(ref.partition("@")[0], "removed"),
            interval_s=settings.models.watch_interval_s,
            settle_s=settings.models.settle_s,
            intra_op_num_threads=worker.intra_op_num_threads,
        )
        watcher.refused_at_start(scan.refused)
        watcher.start()
        started.append(watcher)
    server = oip_server(settings, serving, score, metrics, lambda: True, port, host, metrics_page=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    log.info(
        "serving %s over OIP v2 at %s/v2 (batching %s)",
        ", ".join(f"{n}@{v}{'*' if s else ''}" for n, v, s in serving.current.serving()),
        server.url,
        f"up to {worker.batch_max_size} requests" if worker.batch_max_size > 1 else "off",
    )
    print(f"oip: {server.url}/v2", flush=True)  # stdout: tests and scripts read the address here
    try:
        stop.wait()
    finally:
        server.stop()
        for service in started:
            service.stop()
