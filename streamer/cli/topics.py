"""``streamer topics list | describe | create | delete``: the Kafka topics streamer reads and writes.

``create`` without names creates streamer's set (``TopicSettings.all()``: requests, predictions, feedback,
dead letters, model events, shadow outputs); with names, those (a ``batch --to-topic`` target, say). The count
of a new topic is ``--partitions``, else the request topic's when it exists (so that a set completed later
agrees with it), else ``kafka.partitions``. An existing topic is never changed: one whose count is not that
count is a failure (exit 2) with the commands that fix it (``core.topic_partitions``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from streamer import config
from streamer.cli.base import app, out, plain, settings
from streamer.core import topic_partitions
from streamer.core.errors import ConfigError
from streamer.core.names import unknown

topics_app = typer.Typer(help="Kafka topics of streamer: list, describe (offsets, lag), create, delete.")
app.add_typer(topics_app, name="topics")


def roles(s: config.Settings) -> dict[str, str]:
    """Topic name -> the setting that names it (``topics.requests`` ...)."""
    return {getattr(s.topics, role): f"topics.{role}" for role in type(s.topics).__struct_fields__}


def admin_of(s: config.Settings) -> Any:
    from streamer.adapters.kafka_admin import KafkaAdmin

    return KafkaAdmin(s.require_bootstrap(), s.kafka.client)


def existing(s: config.Settings, admin: Any) -> dict[str, int]:
    """Every topic of the cluster but Kafka's internal ones, with its partition count."""
    return {name: count for name, count in admin.partition_counts().items() if not name.startswith("__")}


def create_command(s: config.Settings, name: str) -> str:
    """The command that creates ``name``: the whole set for one of streamer's topics (they must agree)."""
    return "streamer topics create" if name in s.topics.all() else f"streamer topics create {name}"


def require_topic(s: config.Settings, name: str, admin: Any | None = None, then: str = "") -> int:
    """The partition count of ``name``, or the refusal naming the command that creates it (and close names)."""
    found = existing(s, admin if admin is not None else admin_of(s))
    if name not in found:
        then = then or f"create it with `{create_command(s, name)}`"
        raise unknown("topic", name, found, then=then, listed=False)
    return found[name]


@topics_app.command("list")
def topics_list() -> None:
    """Every topic of the cluster: partitions, and which of streamer's settings names it."""
    s = settings()
    found = existing(s, admin_of(s))
    named = roles(s)
    table = Table("topic", "partitions", "streamer setting")
    for name, count in sorted(found.items()):
        table.add_row(plain(name), str(count), named.get(name, "-"))
    out.print(table)
    absent = [name for name in named if name not in found]
    if absent:
        out.print(plain(f"not created yet: {', '.join(absent)} (`streamer topics create`)"))


@topics_app.command("describe")
def topics_describe(
    names: Annotated[
        list[str] | None, typer.Argument(help="Topics (default: streamer's: requests, predictions, ...).")
    ] = None,
) -> None:
    """Per partition: first and end offsets, and the committed offset and lag of the group that consumes it (the
    workers' group for the request topic, its feedback group for labels)."""
    from streamer.adapters.kafka_admin import partition_offsets
    from streamer.services.label_consumer import feedback_group

    s = settings()
    admin = admin_of(s)
    found = existing(s, admin)
    wanted = names or [name for name in s.topics.all() if name in found]
    for name in wanted:
        if name not in found:
            raise unknown("topic", name, found, then=f"`streamer topics create {name}` creates it", listed=False)
    groups = {s.topics.requests: s.worker.group_id, s.topics.feedback: feedback_group(s.worker.group_id)}
    for name in wanted:
        group = groups.get(name)
        rows = partition_offsets(s.require_bootstrap(), s.kafka.client, name, group)
        title = f"{name}: {len(rows)} partitions" + (f", group {group}" if group else "")
        columns = ["partition", "first", "end", "records"] + (["committed", "lag"] if group else [])
        out.print(plain(title))
        table = Table(*columns)
        for row in rows:
            cells = [str(row.partition), str(row.first), str(row.end), str(row.end - row.first)]
            if group:
                cells += ["-" if row.committed is None else str(row.committed), str(row.lag)]
            table.add_row(*cells)
        if len(rows) > 1:
            total = ["all", "", "", str(sum(r.end - r.first for r in rows))]
            table.add_row(*total, *(["", str(sum(r.lag for r in rows))] if group else []))
        out.print(table)


@topics_app.command("create")
def topics_create(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Topics to create (default: streamer's six: requests, predictions, feedback, requests.dlq, "
            "model-events and predictions.shadow, or the names the topics.* settings give them)."
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Partitions of each new topic (default: the request topic's count if it exists, else "
            "kafka.partitions).",
        ),
    ] = None,
) -> None:
    """Create streamer's topics, or the named ones (idempotent). An existing topic with another partition count
    than asked for is an error (exit 2) that says how to fix it: a topic's count is never changed here."""
    s = settings()
    admin = admin_of(s)
    found = existing(s, admin)
    target = partitions or found.get(s.topics.requests) or s.kafka.partitions
    wanted = names or list(s.topics.all())
    statuses = admin.create_topics(wanted, target, s.kafka.replication_factor)
    table = Table("topic", "partitions", "status")
    for status in statuses:
        state = "created" if status.created else "exists"
        if status.mismatch:
            state = f"exists with {status.partitions}, expected {status.expected_partitions}"
        table.add_row(plain(status.name), str(status.partitions), plain(state))
    out.print(table)
    counts = {status.name: status.partitions for status in statuses}
    if not topic_partitions.disagreeing(counts, target):
        return
    command = "streamer topics create" + (f" {' '.join(names)}" if names else "")
    repair = topic_partitions.repair(counts, target, command)
    served = [s.topics.requests, s.topics.predictions, s.topics.dlq]
    agreeing = len({counts.get(n, found.get(n)) for n in served} - {None}) <= 1
    if partitions and agreeing:
        raise ConfigError(
            f"topics create: {topic_partitions.describe(counts)}, not --partitions {target}, and an existing topic "
            f"is never changed. The worker's topics agree with each other, so `{command}` without --partitions "
            f"keeps them; to have {target} instead, {repair}"
        )
    raise ConfigError(
        f"topics create: partition counts differ from {target} ({topic_partitions.describe(counts)}): the worker "
        f"needs the request, predictions and dead-letter topics to agree, and an existing topic is never changed; "
        f"to fix it, {repair}"
    )


@topics_app.command("delete")
def topics_delete(
    names: Annotated[list[str], typer.Argument(help="Topics to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Delete them: their records are lost.")] = False,
) -> None:
    """Delete topics and every record in them (to create them again with another partition count)."""
    s = settings()
    admin = admin_of(s)
    found = existing(s, admin)
    for name in names:
        if name not in found:
            raise unknown("topic", name, found, then="`streamer topics list` shows the topics", listed=False)
    if not yes:
        raise ConfigError(f"topics delete: this erases every record of {', '.join(names)}: add --yes to delete")
    admin.delete_topics(names)
    out.print(plain(f"deleted {', '.join(names)}"))
