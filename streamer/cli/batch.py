"""``streamer batch``: offline scoring of a file or a topic range."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from streamer import config
from streamer.cli.base import app, err, plain, settings
from streamer.cli.topics import require_topic
from streamer.core.errors import ConfigError
from streamer.core.names import check_model_ref


@app.command("batch")
def batch_command(
    input_path: Annotated[
        Path | None,
        typer.Argument(
            help="JSONL (one request per line), CSV or Parquet (one request per row). Omit with --from-topic."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "--out", "-o", help="Predictions file (default: stdout, JSONL)."),
    ] = None,
    input_format: Annotated[
        str | None, typer.Option(help="jsonl, csv or parquet (default: from the input's extension).")
    ] = None,
    output_format: Annotated[
        str | None, typer.Option(help="jsonl, csv or parquet (default: from --output's extension, else jsonl).")
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            "--dead-letters",
            help="Rejected rows, JSON lines {line|row|partition+offset, error, detail, original} "
            "(default: <output>.rejects.jsonl; stderr when predictions go to stdout or a topic).",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for rows that name none (name or name@version).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per chunk: one ONNX call per model version.")] = 8192,
    threads: Annotated[
        int,
        typer.Option(
            help="Chunks scored at once, one model call each (0: one per core); a JSONL file's in as many worker "
            "processes."
        ),
    ] = 0,
    from_topic: Annotated[
        str | None, typer.Option(help="Re-score a topic's records instead of a file (read_committed, no commits).")
    ] = None,
    partition: Annotated[
        list[int] | None,
        typer.Option(
            help="With --from-topic: only this partition (repeatable; default all). `streamer topics describe "
            "TOPIC` shows each partition's offsets."
        ),
    ] = None,
    from_offset: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="First offset, in EACH partition (offsets are per partition: on a topic of 8 partitions holding "
            "2,000 records, each has about 250, so --from-offset 1000 reads nothing; default: the beginning).",
        ),
    ] = None,
    to_offset: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="End offset in each partition, exclusive: a partition is done once its position reaches it. "
            "Without it the range ends when a consume returns nothing for --idle-ms (high watermarks are not "
            "used: the embedded broker reports wrong ones).",
        ),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            help="First record time (ms since the epoch or ISO-8601): ListOffsets by timestamp, then records "
            "older than it skipped. The embedded broker answers such lookups with offset 0: it works there, by "
            "reading from the start."
        ),
    ] = None,
    to_time: Annotated[
        str | None, typer.Option(help="A partition ends at its first record at or after this time.")
    ] = None,
    idle_ms: Annotated[int, typer.Option(help="With --from-topic: stop after this long without a record.")] = 2000,
    to_topic: Annotated[
        str | None,
        typer.Option(
            help="Write predictions to this topic (keyed like their request; same partition number when it has "
            "as many partitions as the source topic) instead of a file."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Offline scoring of a file or a topic range with the worker's decoding, routing, features and models.

    Every row ends as a prediction (in input order) or a reject with its dead-letter reason; a summary (rows,
    predictions, rejects by reason, rows/s, and the versions that served: the control channel's pins, canaries
    and rollbacks apply, as on a worker) goes to stderr.
    """
    import os

    from streamer.batch import files as batch_files
    from streamer.batch import offline
    from streamer.wiring.models import UNBOUNDED_OUTPUT_BYTES, UNREPORTED_MAX_BYTES
    from streamer.wiring.offline import offline_scorer

    if (input_path is None) == (from_topic is None):
        raise ConfigError("batch: give an input file or --from-topic (one of them)")
    if to_topic is not None and output is not None:
        raise ConfigError("batch: give --output or --to-topic, not both")
    if batch_size < 1:
        raise ConfigError("batch: --batch-size must be at least 1")
    if output is not None and not output.parent.is_dir():
        raise ConfigError(f"batch: --output {output}: {output.parent} is not a directory")
    s = settings()
    if from_topic is not None:
        require_topic(s, from_topic, then="`streamer topics list` shows the topics")
    if to_topic is not None:
        require_topic(s, to_topic)
    source_format = "jsonl" if from_topic is not None else batch_files.format_of(input_path, input_format)
    sink_format = batch_files.format_of(output, output_format)
    if output is None and to_topic is None and sink_format == "parquet":
        raise ConfigError("batch: Parquet output needs --output FILE")
    # A file takes a prediction of any size; a topic what its max.message.bytes says (else a too-large reject).
    output_bytes = UNBOUNDED_OUTPUT_BYTES
    if to_topic is not None:
        from streamer.adapters.kafka_admin import KafkaAdmin

        reported = KafkaAdmin(s.require_bootstrap(), s.kafka.client).max_message_bytes([to_topic])[to_topic]
        output_bytes = reported or UNREPORTED_MAX_BYTES
    built = offline_scorer(s, output_bytes)  # the worker's models, limits, lookups and serving state
    if model is not None:  # rows that name no model go to it: a typo would make every one a reject
        check_model_ref(model, built.scorer.catalog.cards, str(s.models.dir))

    total: int | None
    if from_topic is not None:
        from streamer.batch import topic as batch_topic

        span = batch_topic.TopicRange(
            from_topic,
            tuple(partition) if partition else None,
            from_offset,
            to_offset,
            _epoch_ms(from_time, "--from-time"),
            _epoch_ms(to_time, "--to-time"),
            idle_ms / 1000,
        )
        chunks: Any = batch_topic.read_topic(s.require_bootstrap(), s.kafka.client, span, batch_size)
        total = None
        if to_offset is not None and from_offset is not None and partition:
            total = max(to_offset - from_offset, 0) * len(partition)
        where = ["partition", "offset"]
    elif source_format == "jsonl":
        assert input_path is not None
        chunks = batch_files.jsonl_blocks(input_path, batch_size, model)  # split where they are scored
        total, where = batch_files.file_size(input_path), ["line"]
    else:
        assert input_path is not None
        chunks = batch_files.read_table(input_path, source_format, batch_size, model)
        total = batch_files.table_rows(input_path) if source_format == "parquet" else batch_files.file_size(input_path)
        where = ["row"]

    opened: list[Any] = []
    try:
        predictions = _prediction_sink(s, output, sink_format, where, to_topic, from_topic, opened)
        if rejects is None and output is not None:
            rejects = Path(f"{output}.rejects.jsonl")
        reject_file = open(rejects, "w") if rejects is not None else sys.stderr  # noqa: SIM115
        if rejects is not None:
            opened.append(reject_file)
        reject_sink = offline.RejectSink(batch_files.Rejects(reject_file))
        at_once = threads or os.cpu_count() or 1
        with _progress(not quiet and sys.stderr.isatty(), total, input_path or from_topic) as progress:
            summary = offline.run(
                chunks,
                built.scorer,
                predictions,
                reject_sink,
                progress,
                prefetch=from_topic is None,
                threads=at_once,
                # JSON lines hold the GIL while they are decoded and encoded: worker processes, not threads
                processes=source_format == "jsonl" and from_topic is None and at_once > 1,
            )
    finally:
        for file in opened:
            file.close()
    err.print(plain(f"{summary.line()}; served by {built.served}"), soft_wrap=True)
    if summary.reasons:
        err.print(plain(f"rejects: {rejects or 'stderr'}"), soft_wrap=True)


def _epoch_ms(text: str | None, option: str) -> int | None:
    """Milliseconds since the epoch, from a number of them or an ISO-8601 time (UTC unless it says)."""
    import datetime

    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"batch: {option} {text!r} is neither milliseconds since the epoch nor ISO-8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _prediction_sink(
    s: config.Settings,
    output: Path | None,
    fmt: str,
    where: list[str],
    to_topic: str | None,
    from_topic: str | None,
    opened: list[Any],
) -> Any:
    """Where predictions go: a topic, a file, or stdout (JSONL and CSV only)."""
    from streamer.batch import files as batch_files
    from streamer.batch import offline

    if to_topic is not None:
        from streamer.batch import topic as batch_topic

        bootstrap = s.require_bootstrap()
        target_partitions = batch_topic.partition_count(bootstrap, s.kafka.client, to_topic)
        same = from_topic is not None and batch_topic.partition_count(bootstrap, s.kafka.client, from_topic) == (
            target_partitions
        )
        return offline.TopicSink(batch_topic.TopicWriter(bootstrap, s.kafka.client, to_topic, same))
    if output is not None:
        target: Any = open(output, "wb")  # noqa: SIM115
        opened.append(target)
    else:
        target = sys.stdout.buffer
    if fmt == "jsonl":
        return offline.JsonlSink(batch_files.JsonlPredictions(target))
    return offline.TableSink(batch_files.TablePredictions(target, fmt, where))


@contextlib.contextmanager
def _progress(show: bool, total: int | None, name: object) -> Iterator[Any]:
    """A rich progress bar on stderr (input consumed, rows, rows/s), or nothing."""
    if not show:
        yield None
        return
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(f"scoring {escape(str(name))}", total=total, rows=0, rate=0.0)  # a name is not markup
    started = time.monotonic()

    def update(consumed: int, rows: int) -> None:
        rate = rows / max(time.monotonic() - started, 1e-9)
        bar.update(task, completed=consumed, rows=rows, rate=rate)

    with bar:
        yield update
