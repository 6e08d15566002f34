"""``streamer topics create``: the topics of streamer."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from streamer.cli.base import app, err, out, settings

topics_app = typer.Typer(help="Kafka topics of streamer.")
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None, typer.Option(help="Partitions of each topic (default: kafka.partitions).")
    ] = None,
) -> None:
    """Create the request, predictions, feedback and dead-letter topics (idempotent)."""
    from streamer.adapters.kafka_admin import KafkaAdmin

    s = settings()
    count = partitions if partitions is not None else s.kafka.partitions
    if count < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--partitions")
    admin = KafkaAdmin(s.require_bootstrap(), s.kafka.client)
    statuses = admin.create_topics(s.topics.all(), count, s.kafka.replication_factor)
    table = Table("topic", "partitions", "status")
    for status in statuses:
        if status.mismatch:
            state = f"[yellow]exists with {status.partitions}, expected {status.expected_partitions}[/]"
        else:
            state = "created" if status.created else "exists"
        table.add_row(status.name, str(status.partitions), state)
    out.print(table)
    counts = {status.partitions for status in statuses}
    if len(counts) > 1:
        err.print(
            "[yellow]warning:[/] the topics have different partition counts; the worker writes each output to "
            "its request's partition number and refuses to start until they agree"
        )
        raise typer.Exit(1)
