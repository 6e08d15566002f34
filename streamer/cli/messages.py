"""``streamer produce`` and ``streamer consume``: requests in, predictions out, from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamer.cli.base import app, err, settings


@app.command("produce")
def produce_command(
    count: Annotated[int, typer.Option(help="Messages to send (with --file: at most this many; 0 = all).")] = 1000,
    rate: Annotated[float, typer.Option(help="Messages per second; 0 = as fast as possible.")] = 0.0,
    file: Annotated[Path | None, typer.Option(help="JSONL file: one request value per line, or {key, value}.")] = None,
    keys: Annotated[int, typer.Option(help="Distinct synthetic keys (card ids).")] = 100,
    model: Annotated[str | None, typer.Option(help="Set the request's model (name or name@version).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic traffic.")] = 1,
    topic: Annotated[str | None, typer.Option(help="Target topic (default: the request topic).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Send synthetic transactions (or a JSONL file) to the request topic."""
    from streamer.adapters.kafka_console import produce_requests, read_jsonl
    from streamer.synthetic import synthetic_requests

    s = settings()
    if file is not None:
        messages = read_jsonl(file, count)
    else:
        messages = synthetic_requests(count, keys=keys, model=model, seed=seed)
    sent = produce_requests(
        s.require_bootstrap(), s.kafka.client, topic or s.topics.requests, messages, rate=rate, progress=not quiet
    )
    err.print(
        f"sent {sent.count} messages to {topic or s.topics.requests} in {sent.seconds:.2f} s ({sent.rate:,.0f}/s)"
    )


@app.command("consume")
def consume_command(
    count: Annotated[int, typer.Option(help="Stop after this many messages (0 = until --timeout).")] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds without a message.")] = 5.0,
    topic: Annotated[str | None, typer.Option(help="Topic (default: the predictions topic).")] = None,
    meta: Annotated[bool, typer.Option(help="Print key, partition, offset and headers around each value.")] = False,
) -> None:
    """Print predictions (JSON lines) as a read_committed consumer from the beginning of the topic."""
    from streamer.adapters.kafka_console import consume_lines

    s = settings()
    for line in consume_lines(
        s.require_bootstrap(), s.kafka.client, topic or s.topics.predictions, count, timeout, meta
    ):
        print(line, flush=True)
