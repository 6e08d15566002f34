"""``streamer produce``, ``streamer label`` and ``streamer consume``: requests and labels in, predictions out,
from a shell. Each writes only to a topic that exists (``streamer topics create NAME`` makes one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamer.cli.base import app, err, plain, repository_versions, settings
from streamer.cli.topics import create_command
from streamer.core.errors import ConfigError
from streamer.core.names import check_model_ref
from streamer.core.types import OutgoingMessage


@app.command("produce")
def produce_command(
    count: Annotated[int, typer.Option(help="Messages to send (with --file: at most this many; 0 = all).")] = 1000,
    rate: Annotated[float, typer.Option(help="Messages per second; 0 = as fast as possible.")] = 0.0,
    file: Annotated[Path | None, typer.Option(help="JSONL file: one request value per line, or {key, value}.")] = None,
    keys: Annotated[int, typer.Option(help="Distinct synthetic keys (card ids).")] = 100,
    model: Annotated[
        str | None,
        typer.Option(help="Set the request's model (name or name@version; checked against models.dir when present)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic traffic (ids differ per run: r-SEED-RUN-N).")] = 1,
    topic: Annotated[str | None, typer.Option(help="Target topic (default: the request topic).")] = None,
    labels_out: Annotated[
        Path | None,
        typer.Option(
            "--labels-out",
            help="Also write the synthetic requests' true labels to this JSONL file, for `streamer label --file`.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Send synthetic transactions (or a JSONL file) to the request topic. The producer connects before the
    first message is timed, so the first predictions' latency_ms measures the worker, not the producer's start."""
    from streamer.adapters.kafka_console import produce_requests, read_jsonl
    from streamer.synthetic import run_token, synthetic_labels, synthetic_requests

    s = settings()
    if model is not None and Path(s.models.dir).is_dir():
        then = "produce --model is checked against models.dir (STREAMER_MODELS_DIR): the workers' repository"
        check_model_ref(model, repository_versions(s), str(s.models.dir), then)
    if file is not None and labels_out is not None:
        raise ConfigError("produce: --labels-out writes the synthetic requests' labels; it does not go with --file")
    run = run_token()
    messages = (
        read_jsonl(file, count)
        if file is not None
        else synthetic_requests(count, keys=keys, model=model, seed=seed, run=run)
    )
    target = topic or s.topics.requests
    bootstrap, client, create = s.require_bootstrap(), s.kafka.client, create_command(s, target)
    sent = produce_requests(bootstrap, client, target, messages, rate=rate, progress=not quiet, create=create)
    noun = "message" if sent.count == 1 else "messages"
    err.print(plain(f"sent {sent.count} {noun} to {target} in {sent.seconds:.2f} s ({sent.rate:,.0f}/s)"))
    if labels_out is not None:
        with open(labels_out, "w", encoding="utf-8") as labels:
            for line in synthetic_labels(sent.count, keys=keys, seed=seed, run=run):
                labels.write(json.dumps(line) + "\n")
        err.print(plain(f"true labels in {labels_out}: send them with `streamer label --file {labels_out}`"))


@app.command("label")
def label_command(
    request_id: Annotated[str | None, typer.Argument(metavar="ID", help="The request's id.")] = None,
    label: Annotated[float | None, typer.Argument(metavar="LABEL", help="Its true label (a number).")] = None,
    key: Annotated[str | None, typer.Option(help="The request's key (recommended: the label's partition).")] = None,
    model: Annotated[str | None, typer.Option(help="The model (informational).")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help='JSONL: {"id", "label"} per line, or {"key", "value": {"id", "label"}}.'),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Send labels to the feedback topic: one (ID LABEL) or a file of them. Workers join each to its
    prediction by id; `streamer eval show` then shows the rolling metrics."""
    from streamer.adapters.kafka_console import produce_requests

    if (file is None) == (request_id is None) or (request_id is None) != (label is None):
        raise ConfigError("label: give ID LABEL, or --file FILE (one of them)")
    messages = _labels_of(file) if file is not None else [_label(request_id or "", label or 0.0, key, model)]
    s = settings()
    feedback, create = s.topics.feedback, create_command(s, s.topics.feedback)
    progress = not quiet and file is not None
    sent = produce_requests(s.require_bootstrap(), s.kafka.client, feedback, messages, progress=progress, create=create)
    err.print(plain(f"sent {sent.count} label{'s' if sent.count != 1 else ''} to {s.topics.feedback}"))


def _label(request_id: str, label: float, key: str | None, model: str | None) -> OutgoingMessage:
    value: dict[str, object] = {"id": request_id, "label": int(label) if float(label).is_integer() else label}
    if model is not None:
        value["model"] = model
    return OutgoingMessage(None if key is None else key.encode(), json.dumps(value).encode())


def _labels_of(path: Path) -> list[OutgoingMessage]:
    """Every label of a JSONL file, each checked as a worker decodes it (``core.labels``) before any is sent."""
    from streamer.adapters.kafka_console import read_jsonl
    from streamer.core.errors import DecodeError
    from streamer.core.labels import decode_label

    messages = list(read_jsonl(path))
    for number, message in enumerate(messages, start=1):
        try:
            decode_label(message.value)
        except DecodeError as exc:
            raise ConfigError(
                f'{path}:{number}: not a label ({exc.detail}): expected {{"id": ..., "label": 1}}'
            ) from None
    return messages


@app.command("consume")
def consume_command(
    count: Annotated[int, typer.Option(help="Stop after this many messages (0 = until --timeout).")] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds without a message.")] = 5.0,
    topic: Annotated[str | None, typer.Option(help="Topic (default: the predictions topic).")] = None,
    partition: Annotated[list[int] | None, typer.Option(help="Only this partition (repeatable; default: all).")] = None,
    offset: Annotated[
        int | None, typer.Option(min=0, help="Start at this offset of each partition (default: its first record).")
    ] = None,
    from_end: Annotated[
        bool, typer.Option("--from-end", help="Start at each partition's end: only what is written from now on.")
    ] = False,
    meta: Annotated[bool, typer.Option(help="Print key, partition, offset and headers around each value.")] = False,
) -> None:
    """Print predictions (or another topic) as JSON lines, as a read_committed consumer that joins no group and
    commits nothing: from the beginning of each partition, from --offset, or --from-end."""
    from streamer.adapters.kafka_console import consume_lines

    if offset is not None and from_end:
        raise ConfigError("consume: give --offset or --from-end, not both")
    s = settings()
    for line in consume_lines(
        s.require_bootstrap(),
        s.kafka.client,
        topic or s.topics.predictions,
        count,
        timeout,
        meta,
        partitions=partition,
        offset=offset,
        from_end=from_end,
    ):
        print(line, flush=True)
