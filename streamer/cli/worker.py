"""``streamer worker`` and ``streamer serve``: the long-running processes."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

from streamer.cli.base import app, configure_logs, settings
from streamer.wiring.signals import on_stop_signals


def _stop_cleanly_until_serving() -> None:
    """SIGTERM or SIGINT while the worker starts (imports, the broker wait, model loading) stops it with exit 0
    at once: nothing has been consumed yet, and a process manager that stops a starting worker sees a clean stop,
    not a death by signal (-15). Each engine replaces these handlers with its own draining ones when it starts."""

    def stop(signum: signal.Signals) -> None:
        logging.getLogger("streamer.worker").info("stopped by %s before serving", signum.name)
        raise SystemExit(0)

    on_stop_signals(stop)


@app.command("worker")
def worker_command() -> None:
    """Run one scoring worker until SIGINT/SIGTERM (then finish in-flight batches, commit, exit 0)."""
    _stop_cleanly_until_serving()
    configure_logs(long_running=True)
    from streamer import app as worker_app

    worker_app.run(settings())


@app.command("serve")
def serve_command(
    port: Annotated[
        int | None,
        typer.Option(help="HTTP port (default: worker.oip_port, else 8080; 0 = a free port, printed at start)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: worker.oip_host, loopback).")] = None,
) -> None:
    """Serve the models over Open Inference Protocol v2 HTTP (KServe v2, Triton clients), without Kafka."""
    from streamer.serve import run_serve

    configure_logs(long_running=True)
    run_serve(settings(), port, host)
