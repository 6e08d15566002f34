"""The ``streamer`` command: the only place that reads settings, configures logging and wires adapters.

Every command loads the settings once (``--config``, then ``STREAMER_*``), and a ``StreamerError`` (bad
setting, refused model, unreachable server) ends the command with one line on stderr and exit code 2, never a
traceback: these are operator errors, and the line names the file or the setting to fix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamer import config, logs
from streamer.core.errors import ConfigError, FatalError, StreamerError

app = typer.Typer(
    help="Near-real-time ML scoring for Kafka: keyed predictions from ONNX models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="The embedded stack: a Kafka-compatible broker and redis-server on loopback.")
topics_app = typer.Typer(help="Kafka topics of streamer.")
models_app = typer.Typer(help="The model repository.")
app.add_typer(dev_app, name="dev")
app.add_typer(topics_app, name="topics")
app.add_typer(models_app, name="models")

# Rich wraps at 80 columns when stdout is not a terminal; tables piped to a file or a test stay unwrapped.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class _State:
    config_path: str | None = None


def settings() -> config.Settings:
    loaded = config.load(_State.config_path)
    if loaded.unknown_env:
        logging.getLogger("streamer.config").warning("ignoring unknown variable(s) %s", ", ".join(loaded.unknown_env))
    return loaded


def _print_version(wanted: bool) -> None:
    """``streamer --version``: the installed distribution's version (what pip installed, not a constant)."""
    if wanted:
        from importlib.metadata import version

        typer.echo(f"streamer {version('streamer')}")
        raise typer.Exit()


@app.callback()
def main_options(
    config_path: Annotated[
        str | None,
        typer.Option(
            "--config", help="TOML settings file (default: streamer.toml if present).", envvar="STREAMER_CONFIG"
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    _State.config_path = config_path


# ---------------------------------------------------------------------------------------------- dev


@dev_app.command("up")
def dev_up() -> None:
    """Start the broker and redis-server (or report the running ones) and write their addresses."""
    from streamer.adapters import devstack

    state_dir = Path(settings().dev.state_dir)
    state, started = devstack.up(state_dir)
    verb = "started" if started else "already running"
    out.print(
        f"broker  {state.kafka_bootstrap}  (pid {state.broker.pid}, {verb}, ready in {state.broker.startup_s:.2f} s)"
    )
    out.print(f"redis   {state.redis_url}  (pid {state.redis.pid}, {verb}, ready in {state.redis.startup_s:.2f} s)")
    out.print(f"state   {state_dir / devstack.STATE_FILE}; logs in {state_dir / 'logs'}")


@dev_app.command("down")
def dev_down() -> None:
    """Stop the embedded stack (SIGTERM, then SIGKILL after a grace period)."""
    from streamer.adapters import devstack

    stopped = devstack.down(Path(settings().dev.state_dir))
    out.print("stopped broker and redis-server" if stopped else "nothing was running")


@dev_app.command("status")
def dev_status() -> None:
    """Whether the embedded servers run and answer. Exit code 1 when they don't."""
    from streamer.adapters import devstack

    state = devstack.read_state(Path(settings().dev.state_dir))
    if state is None:
        out.print("not running (no state file; start it with `streamer dev up`)")
        raise typer.Exit(1)
    healthy = devstack.health(state)
    for server in (state.broker, state.redis):
        mark = "up" if healthy[server.name] else "DOWN"
        out.print(f"{server.name:<7} {server.address:<28} pid {server.pid:<8} {mark}  log {server.log_path}")
    if not all(healthy.values()):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- topics


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


# ---------------------------------------------------------------------------------------------- models


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every model version in the repository, with its card and whether it loads."""
    from streamer.adapters import model_repository

    s = settings()
    models_dir = s.require_models_dir()
    result = model_repository.scan(models_dir)
    pins = dict(s.models.pins)
    if s.redis.url:  # what the control channel says wins over the file, as in the workers
        from streamer.adapters.control_channel import ControlChannel
        from streamer.adapters.redis_state import RedisStateStore

        try:
            store = RedisStateStore.from_settings(s.redis)
            states = ControlChannel(store.client, store.prefix).read()
        except Exception as exc:  # Redis down: the file's pins, said so
            logging.getLogger("streamer.models").warning("cannot read the serving state from Redis (%s)", exc)
        else:
            pins.update({name: state.pin for name, state in states.items() if state.pin is not None})
    rows: list[dict[str, Any]] = []
    for name, versions in sorted(result.loaded.items()):
        pinned = pins.get(name)
        serving = pinned if pinned in versions else max(versions)
        for version, model in sorted(versions.items()):
            card = model.card
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "status": "serving" if version == serving else "loaded",
                    "task": card.task,
                    "features": list(card.features),
                    "metrics": card.card.get("metrics", {}),
                    "path": str(model.path.parent),
                }
            )
    for path, error in sorted(result.refused.items()):
        rows.append({"name": path.parent.name, "version": path.name, "status": "refused", "error": str(error)})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("model", "version", "status", "task", "features", "metrics")
    for row in rows:
        if row["status"] == "refused":
            table.add_row(row["name"], str(row["version"]), "[red]refused[/]", row["error"], "", "")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in row["metrics"].items())
        table.add_row(row["name"], str(row["version"]), row["status"], row["task"], str(len(row["features"])), metrics)
    out.print(table)


def _stop_cleanly_until_serving() -> None:
    """SIGTERM or SIGINT while the worker starts (imports, the broker wait, model loading) stops it with exit 0
    at once: nothing has been consumed yet, and a process manager that stops a starting worker sees a clean stop,
    not a death by signal (-15). Each engine replaces these handlers with its own draining ones when it starts."""
    import signal

    def stop(signum: int, _frame: Any) -> None:
        logging.getLogger("streamer.worker").info("stopped by %s before serving", signal.Signals(signum).name)
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


@app.command("worker")
def worker_command() -> None:
    """Run one scoring worker until SIGINT/SIGTERM (then finish in-flight batches, commit, exit 0)."""
    _stop_cleanly_until_serving()
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
    from streamer.services.oip_serving import run_serve

    s = settings()
    run_serve(s, port if port is not None else (s.worker.oip_port or 8080), host)


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
    from streamer.adapters.kafka_input import produce_requests, read_jsonl, synthetic_requests

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
    from streamer.adapters.kafka_input import consume_lines

    s = settings()
    for line in consume_lines(
        s.require_bootstrap(), s.kafka.client, topic or s.topics.predictions, count, timeout, meta
    ):
        print(line, flush=True)


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
    from streamer import top

    if interval <= 0:
        raise typer.BadParameter("must be positive", param_hint="--interval")
    raise typer.Exit(top.run(urls or [top.DEFAULT_URL], interval, once, out))


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
    threads: Annotated[int, typer.Option(help="Chunks scored at once, one model call each (0: one per core).")] = 0,
    from_topic: Annotated[
        str | None, typer.Option(help="Re-score a topic's records instead of a file (read_committed, no commits).")
    ] = None,
    partition: Annotated[
        list[int] | None, typer.Option(help="With --from-topic: only this partition (repeatable; default all).")
    ] = None,
    from_offset: Annotated[
        int | None, typer.Option(help="First offset of each partition (default: beginning).")
    ] = None,
    to_offset: Annotated[
        int | None,
        typer.Option(
            help="End offset, exclusive: a partition is done once its position reaches it. Without it the range "
            "ends when a consume returns nothing for --idle-ms (high watermarks are not used: the embedded "
            "broker reports wrong ones)."
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

    Every row ends as a prediction (in input order) or a reject with its dead-letter reason; a summary
    (rows, predictions, rejects by reason, rows/s) goes to stderr.
    """
    import os

    from streamer.adapters import batch_files
    from streamer.app import entity_lookup, load_catalog
    from streamer.core.scoring import Limits
    from streamer.engines import offline

    if (input_path is None) == (from_topic is None):
        raise ConfigError("batch: give an input file or --from-topic (one of them)")
    if to_topic is not None and output is not None:
        raise ConfigError("batch: give --output or --to-topic, not both")
    if batch_size < 1:
        raise ConfigError("batch: --batch-size must be at least 1")
    s = settings()
    source_format = "jsonl" if from_topic is not None else batch_files.format_of(input_path, input_format)
    sink_format = batch_files.format_of(output, output_format)
    if output is None and to_topic is None and sink_format == "parquet":
        raise ConfigError("batch: Parquet output needs --output FILE")
    catalog, scorer, _ = load_catalog(s)
    # A file takes a prediction of any size; a topic what its max.message.bytes says (else a too-large reject).
    output_bytes = 1 << 62
    if to_topic is not None:
        from streamer.adapters.kafka_admin import KafkaAdmin
        from streamer.app import UNREPORTED_MAX_BYTES

        reported = KafkaAdmin(s.require_bootstrap(), s.kafka.client).max_message_bytes([to_topic])[to_topic]
        output_bytes = reported or UNREPORTED_MAX_BYTES
    limits = Limits(s.worker.max_message_bytes, s.worker.max_rows_per_request, max_output_bytes=output_bytes)

    total: int | None
    if from_topic is not None:
        from streamer.adapters import batch_topic

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
        chunks = batch_files.read_jsonl(input_path, batch_size, model)
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
        scorer_of = offline.ChunkScorer(catalog, scorer.infer, limits, entity_lookup(s, catalog))
        with _progress(not quiet and sys.stderr.isatty(), total, input_path or from_topic) as progress:
            summary = offline.run(
                chunks,
                scorer_of,
                predictions,
                reject_sink,
                progress,
                prefetch=from_topic is None,
                threads=threads or os.cpu_count() or 1,
            )
    finally:
        for file in opened:
            file.close()
    err.print(summary.line(), highlight=False, soft_wrap=True)
    if summary.reasons:
        err.print(f"rejects: {rejects or 'stderr'}", highlight=False, soft_wrap=True)


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
    from streamer.adapters import batch_files
    from streamer.engines import offline

    if to_topic is not None:
        from streamer.adapters import batch_topic

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
    task = bar.add_task(f"scoring {name}", total=total, rows=0, rate=0.0)
    started = time.monotonic()

    def update(consumed: int, rows: int) -> None:
        rate = rows / max(time.monotonic() - started, 1e-9)
        bar.update(task, completed=consumed, rows=rows, rate=rate)

    with bar:
        yield update


eval_app = typer.Typer(help="Rolling evaluation from joined labels (shared by all workers, in Redis).")
app.add_typer(eval_app, name="eval")


@eval_app.command("show")
def eval_show(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Count, accuracy, log loss, precision, recall and AUC per model version and window."""
    import dataclasses
    import math
    import time

    from streamer.adapters import model_repository
    from streamer.adapters.redis_state import RedisStateStore
    from streamer.core.evaluation import parse_windows

    s = settings()
    store = RedisStateStore.from_settings(s.redis, windows=parse_windows(s.evaluation.windows))
    now = time.time()
    rows = []
    for version_dir in model_repository.version_dirs(s.require_models_dir()):
        name, version = version_dir.parent.name, version_dir.name
        if model is not None and name != model:
            continue
        for window in store.windows:
            m = store.metrics(name, version, window, now)
            rows.append({"model": name, "version": version, "window": window.name, **dataclasses.asdict(m)})
    figures = ("accuracy", "log_loss", "precision", "recall", "auc")
    if as_json:
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        out.print_json(json.dumps(clean))
        return
    table = Table("model", "version", "window", "labels", "accuracy", "log loss", "precision", "recall", "AUC")
    for r in rows:
        cells = ["—" if math.isnan(r[k]) else f"{r[k]:.4f}" for k in figures]
        table.add_row(r["model"], r["version"], r["window"], str(r["count"]), *cells)
    out.print(table)


@models_app.command("validate")
def models_validate(
    version_dir: Annotated[Path, typer.Argument(help="A <models>/<name>/<version> directory.")],
) -> None:
    """Load one model version as a worker would; a refusal is one line naming the file (exit code 2)."""
    from streamer.adapters import model_repository

    model = model_repository.load_version(version_dir)
    out.print(f"ok: {model.card.ref} ({len(model.card.features)} features, outputs {', '.join(model.output_names)})")


@models_app.command("freeze")
def models_freeze(
    name: Annotated[str, typer.Argument(help="An online model (its card has an \\[online] table).")],
    version: Annotated[int | None, typer.Option(help="The online version; default: the highest.")] = None,
) -> None:
    """Write an online model's current shared weights (Redis) as the next version: a plain ONNX model.

    The new version has the same card without \\[online] (it serves, it does not learn) and, being the highest,
    is what workers serve after a restart unless the config pins a version.
    """
    from streamer.adapters import model_repository, online
    from streamer.adapters.redis_state import RedisStateStore

    s = settings()
    models_dir = s.require_models_dir()
    versions = [d for d in model_repository.version_dirs(models_dir) if d.parent.name == name]
    chosen = [d for d in versions if version is None or d.name == str(version)]
    if not chosen:
        raise ConfigError(f"models freeze: no version {version or ''} of {name!r} in {models_dir}")
    model = model_repository.load_version(chosen[-1])
    if model.card.online is None:
        raise ConfigError(f"models freeze: {model.card.ref} is not an online model (its card has no [online])")
    store = RedisStateStore.from_settings(s.redis)
    try:
        target = online.freeze(store, model, models_dir)
    except LookupError as exc:
        raise ConfigError(f"models freeze: {exc}") from None
    frozen = model_repository.load_version(target)
    out.print(f"froze {model.card.ref} into {frozen.card.ref} at {target}")


def _register_lifecycle_commands() -> None:
    from streamer import graph_commands, model_commands

    model_commands.register(models_app, settings, out)
    graph_commands.register(app, settings, out)


_register_lifecycle_commands()


def _register_config_commands() -> None:
    from streamer import config_show

    config_show.register(app, lambda: _State.config_path)


_register_config_commands()


# ---------------------------------------------------------------------------------------------- features

features_app = typer.Typer(help="Entity features in Redis, read by a graph's enrichment stage.")
app.add_typer(features_app, name="features")


def _entity_rows(path: Path, key_field: str) -> Iterator[tuple[bytes, dict[str, float]]]:
    """(key, features) per line of a JSONL file: ``{"key": ..., "features": {...}}`` or a flat object whose
    other fields are the features. A bad line is one error naming the file and line (the lines before it are
    loaded: loading again is harmless)."""
    import math

    from streamer.adapters.entity_features import feature_key

    try:
        lines = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"features load: {path}: {exc.strerror}") from None
    with lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                body = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{where}: not JSON ({exc})") from None
            if not isinstance(body, dict) or key_field not in body:
                raise ConfigError(f"{where}: not an object with a {key_field!r} field")
            raw_key = body.pop(key_field)
            if isinstance(raw_key, bool) or not isinstance(raw_key, str | int | float) or raw_key == "":
                raise ConfigError(f"{where}: {key_field!r} must be a non-empty string or a number")
            key = feature_key(raw_key)
            if key is None:
                raise ConfigError(f"{where}: {key_field!r} is not a usable key")
            nested = isinstance(body.get("features"), dict)
            features = body["features"] if nested else body  # nested: the other fields are not features
            if not isinstance(features, dict) or not features:
                raise ConfigError(f"{where}: no features")
            for name, value in features.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ConfigError(f"{where}: feature {name!r} is {json.dumps(value)}, not a finite number")
            yield key, features


@features_app.command("load")
def features_load(
    entity: Annotated[str, typer.Argument(help="The entity type, e.g. account.")],
    file: Annotated[Path, typer.Argument(help='JSONL: {"key": ..., "features": {"name": number}} or flat objects.')],
    key_field: Annotated[str, typer.Option("--key-field", help="The field holding the entity key.")] = "key",
    ttl_s: Annotated[int | None, typer.Option("--ttl-s", min=1, help="Seconds each entity lives.")] = None,
) -> None:
    """Write entity features to Redis ({prefix}:entity:ENTITY:KEY hashes, merged into existing ones)."""
    import redis

    from streamer.adapters.entity_features import EntityFeatureStore

    store = EntityFeatureStore.from_settings(settings().redis)
    try:
        store.key_of(entity, b"")  # a bad entity type is refused before reading the file
        written = store.put(entity, _entity_rows(file, key_field), ttl_s=ttl_s)
    except ValueError as exc:
        raise ConfigError(f"features load: {exc}") from None
    except redis.RedisError as exc:
        raise StreamerError(f"features load: Redis: {exc}") from None
    out.print(f"loaded {written} {entity} entities from {file}")


@features_app.command("get")
def features_get(
    entity: Annotated[str, typer.Argument(help="The entity type, e.g. account.")],
    key: Annotated[str, typer.Argument(help="The entity key (UTF-8).")],
) -> None:
    """Print one entity's features as JSON (exit code 1 when it is absent)."""
    import math

    import redis

    from streamer.adapters.entity_features import EntityFeatureStore

    store = EntityFeatureStore.from_settings(settings().redis)
    try:
        stored = store.read(entity, key.encode())
    except ValueError as exc:
        raise ConfigError(f"features get: {exc}") from None
    except redis.RedisError as exc:
        raise StreamerError(f"features get: Redis: {exc}") from None
    if not stored:
        where = store.key_of(entity, key.encode()).decode(errors="replace")
        err.print(f"no {entity} entity {key!r} ({where})", markup=False, highlight=False)
        raise typer.Exit(1)
    values: dict[str, Any] = {}
    for name, raw in sorted(stored.items()):
        text = raw.decode(errors="backslashreplace")
        try:
            number = float(text)
        except ValueError:
            number = None
        # Not a finite number: shown as stored (a lookup takes the default for it).
        values[name] = number if number is not None and math.isfinite(number) else text
    out.print_json(json.dumps(values))


def main() -> None:
    logs.configure()
    try:
        app()
    except StreamerError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code if isinstance(exc, FatalError) else 2)


if __name__ == "__main__":
    main()
