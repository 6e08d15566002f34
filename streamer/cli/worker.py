"""``streamer worker`` and ``streamer serve``: the long-running processes."""

from __future__ import annotations

from typing import Annotated

import typer

from streamer.cli.base import app, configure_logs, settings
from streamer.wiring import signals


@app.command("worker")
def worker_command() -> None:
    """Run one scoring worker until SIGINT/SIGTERM (then finish in-flight batches, commit, exit 0)."""
    # Already installed by the entry point (``streamer.launch``); ``python -m streamer.cli`` gets it here. A stop
    # from now on is recorded and the start ends with exit 0 at its next step (``wiring.signals``).
    signals.install()
    configure_logs(long_running=True)
    from streamer import app as worker_app

    signals.exit_if_requested("importing the worker")
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
