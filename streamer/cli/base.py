"""The root of the ``streamer`` command: the Typer app, the consoles, the settings every command loads, and
the one way a command prints an error or a warning.

Every command loads the settings once (``--config``, then ``STREAMER_*``) through ``settings()``. Command groups
live one per module beside this one and register on ``app`` when ``streamer.cli`` imports them.

Text that comes from outside -- an error's message, a model's card, a file name, a user's argument -- is never
parsed as rich markup: ``[online]`` or ``[/bold]`` in it is printed as written. ``error``/``warning`` print such
text (a coloured prefix, then the text verbatim), ``plain`` wraps it for a table cell; nothing else in the CLI
passes outside text to ``print`` as a markup string.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from streamer import config, logs

app = typer.Typer(
    help="Near-real-time ML scoring for Kafka: keyed predictions from ONNX models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Rich wraps at 80 columns when stdout is not a terminal; tables piped to a file or a test stay unwrapped.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class _State:
    config_path: str | None = None
    verbosity: int = 0


def plain(text: object) -> Text:
    """``text`` as rich prints it literally (a table cell, a line): no markup, no highlighting."""
    return Text(str(text))


def error(message: object) -> None:
    """``error: MESSAGE`` on stderr, the message verbatim (one line: it wraps only on a terminal)."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True, highlight=False)


def warning(message: object) -> None:
    """``warning: MESSAGE`` on stderr, the message verbatim."""
    err.print(Text.assemble(("warning:", "yellow"), " ", str(message)), soft_wrap=True, highlight=False)


def configure_logs(long_running: bool = False) -> None:
    """The log level of this command (``streamer.logs``): WARNING for a command that answers and exits, INFO for
    the worker and ``serve``; each ``-v`` one level more, ``STREAMER_LOG_LEVEL`` over all of it."""
    levels = ["WARNING", "INFO", "DEBUG"]
    start = 1 if long_running else 0
    logs.configure(levels[min(start + _State.verbosity, len(levels) - 1)])


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
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Log more: -v INFO, -vv DEBUG (commands other than worker and serve log only warnings). "
            "STREAMER_LOG_LEVEL overrides it.",
        ),
    ] = 0,
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    _State.config_path = config_path
    _State.verbosity = verbose
    configure_logs()


def repository_versions(s: config.Settings) -> dict[str, list[int]]:
    """Every model and graph of the repository on disk, with its versions (nothing loaded: names only)."""
    from streamer.adapters import graph_repository, model_repository

    models_dir = s.require_models_dir()
    found: dict[str, list[int]] = {}
    for version_dir in model_repository.version_dirs(models_dir):
        found.setdefault(version_dir.parent.name, []).append(int(version_dir.name))
    graphs = graph_repository.graphs_dir(models_dir, s.models.graphs_dir)
    for spec in graph_repository.read_graphs(graphs) if graphs is not None else []:
        found.setdefault(spec.name, []).append(spec.version)
    return found
