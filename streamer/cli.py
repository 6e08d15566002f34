"""The ``streamer`` command: the only place that reads settings, configures logging and wires adapters.

Every command loads the settings once (``--config``, then ``STREAMER_*``), and a ``StreamerError`` (bad
setting, refused model, unreachable server) ends the command with one line on stderr and exit code 2, never a
traceback: these are operator errors, and the line names the file or the setting to fix.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamer import config, logs
from streamer.core.errors import ConfigError, StreamerError

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


@app.callback()
def main_options(
    config_path: Annotated[
        str | None,
        typer.Option(
            "--config", help="TOML settings file (default: streamer.toml if present).", envvar="STREAMER_CONFIG"
        ),
    ] = None,
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
    rows: list[dict[str, Any]] = []
    for name, versions in sorted(result.loaded.items()):
        pinned = s.models.pins.get(name)
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


@app.command("worker")
def worker_command() -> None:
    """Run one scoring worker until SIGINT/SIGTERM (then finish in-flight batches, commit, exit 0)."""
    from streamer import app as worker_app

    worker_app.run(settings())


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


@app.command("batch")
def batch_command(
    input_path: Annotated[Path, typer.Argument(help="JSONL file: one request value per line (contract section 2).")],
    out: Annotated[Path | None, typer.Option(help="Predictions JSONL (default: stdout).")] = None,
    dead_letters: Annotated[Path | None, typer.Option(help="Dead letters JSONL (default: stderr).")] = None,
    model: Annotated[str | None, typer.Option(help="Model for lines that name none (name or name@version).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per ONNX call.")] = 1024,
) -> None:
    """Offline scoring of a file through the same decoding, routing and scoring as the worker."""
    import time
    from functools import partial

    from streamer.app import load_catalog
    from streamer.core.scoring import Limits, score_records
    from streamer.engines.offline import score_file

    s = settings()
    catalog, scorer, _ = load_catalog(s)
    limits = Limits(s.worker.max_message_bytes, s.worker.max_rows_per_request)
    score = partial(score_records, catalog=catalog, infer=scorer.infer, limits=limits)
    started = time.monotonic()
    out_file = open(out, "w") if out is not None else sys.stdout  # noqa: SIM115
    dlq_file = open(dead_letters, "w") if dead_letters is not None else sys.stderr  # noqa: SIM115
    try:
        counts = score_file(input_path, score, out_file, dlq_file, batch_size, model)
    finally:
        if out is not None:
            out_file.close()
        if dead_letters is not None:
            dlq_file.close()
    seconds = time.monotonic() - started
    err.print(f"{counts.predictions} predictions, {counts.dead_letters} dead letters in {seconds:.2f} s")


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
    name: Annotated[str, typer.Argument(help="An online model (its card has [online]).")],
    version: Annotated[int | None, typer.Option(help="The online version; default: the highest.")] = None,
) -> None:
    """Write an online model's current shared weights (Redis) as the next version: a plain ONNX model.

    The new version has the same card without [online] (it serves, it does not learn) and, being the highest,
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


def main() -> None:
    logs.configure()
    try:
        app()
    except StreamerError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
