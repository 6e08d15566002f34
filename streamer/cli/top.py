"""``streamer top``: the live view of workers' metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from streamer.cli.base import app, out


@app.command("top")
def top_command(
    urls: Annotated[
        list[str] | None,
        typer.Argument(help="Workers' /metrics URLs (or host:port); default http://127.0.0.1:9464/metrics."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (and the rates' interval).")] = 2.0,
    once: Annotated[bool, typer.Option(help="Print one frame (two scrapes, --interval apart) and exit.")] = False,
) -> None:
    """Live view of workers' metrics: rates, latency quantiles, lag, dead letters, rolling accuracy."""
    from streamer.top import terminal as top

    if interval <= 0:
        raise typer.BadParameter("must be positive", param_hint="--interval")
    raise typer.Exit(top.run(urls or [top.DEFAULT_URL], interval, once, out))
