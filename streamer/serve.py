"""On-demand serving wired: the OIP v2 HTTP server beside a worker's stream, or alone as ``streamer serve``.

Both score with the stream's scoring function over the ``ServingModels`` set a worker serves, built by
``streamer.wiring`` exactly as a worker builds it (hot reload, declared graphs, the control channel's pins,
canaries, shadows and rollbacks), with the worker's batch policy and limits, so a row gets the same answer on
demand as through Kafka. ``streamer serve`` needs no Kafka: the model repository (watched for new versions),
Redis for the control channel (followed while it runs, like a worker) and a graph's enrichment stages, and
``/metrics`` on its own port. It prints the versions it serves at start.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from streamer import __version__
from streamer.adapters.listening import Listener, ensure_free, translated
from streamer.adapters.model_repository import ScanResult
from streamer.adapters.prometheus_metrics import CONTENT_TYPE, WorkerMetrics
from streamer.config import Settings
from streamer.core.errors import StreamerError, exit_code_of
from streamer.oip.http import OipServer
from streamer.oip.on_demand import OnDemandScorer
from streamer.services import runner
from streamer.services.runner import Stoppable
from streamer.serving import ServingModels
from streamer.wiring import signals
from streamer.wiring.models import (
    ScoreFn,
    batch_scorer,
    entity_lookup,
    export_models,
    load_models,
    output_limits,
    scoring_limits,
    served,
)
from streamer.wiring.serving_state import control_channel, follow_serving_state, watch_models

log = logging.getLogger(__name__)


def worker_oip_listener(settings: Settings) -> Listener:
    """The OIP address of a worker (``worker.oip_host``:``worker.oip_port``), as a refusal names it."""
    return Listener(
        settings.worker.oip_host,
        settings.worker.oip_port,
        "worker.oip_host (STREAMER_OIP_HOST)",
        "worker.oip_port (STREAMER_OIP_PORT)",
        "set STREAMER_OIP_PORT to another port, or to 0 for no OIP server in this worker",
    )


def serve_listener(settings: Settings, port: int | None, host: str | None) -> Listener:
    """The address of ``streamer serve``: ``--port``/``--host``, else ``worker.oip_port`` (else 8080)/``_host``."""
    return Listener(
        settings.worker.oip_host if host is None else host,
        port if port is not None else (settings.worker.oip_port or 8080),
        "serve --host" if host is not None else "worker.oip_host (STREAMER_OIP_HOST)",
        "serve --port" if port is not None else "worker.oip_port (STREAMER_OIP_PORT, else 8080)",
        "choose another --port, or --port 0 for a free one (printed at start)",
    )


def oip_server(
    settings: Settings,
    serving: ServingModels,
    score: ScoreFn,
    metrics: WorkerMetrics,
    ready: Callable[[], bool],
    port: int | None = None,
    host: str | None = None,
    metrics_page: bool = False,
    listener: Listener | None = None,
) -> OipServer:
    """The server (not started) on ``port``/``host`` (default: ``worker.oip_port``/``worker.oip_host``); a
    bind that fails is one line naming ``listener``'s settings (default: the worker's)."""
    scorer = OnDemandScorer(score, settings.worker.batch_policy(), metrics.on_oip_batch)
    chosen = listener or worker_oip_listener(settings)
    with translated(chosen):
        return _server(settings, serving, scorer, metrics, ready, port, host, metrics_page)


def _server(
    settings: Settings,
    serving: ServingModels,
    scorer: OnDemandScorer,
    metrics: WorkerMetrics,
    ready: Callable[[], bool],
    port: int | None,
    host: str | None,
    metrics_page: bool,
) -> OipServer:
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


@dataclass(frozen=True, slots=True)
class Standalone:
    """What ``streamer serve`` scores with, without Kafka: the model set, its metrics and the stream's score."""

    serving: ServingModels
    metrics: WorkerMetrics
    score: ScoreFn
    scan: ScanResult


def standalone(settings: Settings) -> Standalone:
    """The model set (the configured policy; the control channel is applied by ``run_serve``), its metrics
    and the scoring function, as a worker builds them; the output limit is ``kafka.max_output_bytes`` or the
    default a worker takes where the broker reports none."""
    models = load_models(settings)
    serving, metrics = models.serving, WorkerMetrics()
    export_models(serving, metrics)
    limits = scoring_limits(settings, output_limits(settings, None).predictions)
    score = batch_scorer(serving, limits, metrics.on_inference, entity_lookup(settings, serving.current.catalog))
    return Standalone(serving, metrics, score, models.scan)


def run_serve(settings: Settings, port: int | None = None, host: str | None = None) -> None:
    """``streamer serve``: the models over OIP v2 HTTP until SIGINT/SIGTERM, without Kafka. ``port``/``host``:
    ``--port``/``--host`` (None: ``serve_listener``'s defaults); a taken port is refused before the models load."""
    listener = serve_listener(settings, port, host)
    ensure_free(listener)
    stop = threading.Event()
    signals.on_stop(lambda _: stop.set())  # a stop while the models load ends it as soon as they are loaded
    failed = threading.Event()
    runner.set_process_fatal_hook(partial(_service_stopped, failed))  # before any service is built
    built = standalone(settings)
    serving, worker = built.serving, settings.worker
    started: list[Stoppable] = []
    try:
        control = follow_serving_state(settings, serving, built.metrics, control_channel(settings))
        started += [control] if control is not None else []
        watcher = watch_models(settings, serving, built.scan, built.metrics)
        started += [watcher] if watcher is not None else []
        ready = partial(_not_set, failed)
        server = oip_server(
            settings,
            serving,
            built.score,
            built.metrics,
            ready,
            listener.port,
            listener.host,
            metrics_page=True,
            listener=listener,
        )
        server.start()
        started.insert(0, server)
        log.info(
            "serving over OIP v2 at %s/v2 (batching %s)",
            server.url,
            f"up to {worker.batch_max_size} requests" if worker.batch_max_size > 1 else "off",
        )
        # stdout: tests and scripts read the address here
        print(f"serving: {served(serving.current.catalog)}", flush=True)
        print(f"oip: {server.url}/v2", flush=True)
        stop.wait()
    finally:
        for service in started:
            service.stop()


def _service_stopped(failed: threading.Event, _name: str, error: StreamerError) -> None:
    """A background service stopped on an error no retry can fix (it said so in one CRITICAL line): ``/ready``
    turns 503, and ``streamer serve`` exits with the error's code (2: an operator error) at once."""
    failed.set()
    logging.shutdown()
    os._exit(exit_code_of(error))


def _not_set(event: threading.Event) -> bool:
    return not event.is_set()
