"""The root of the ``streamer`` command: the Typer app, the consoles, and the settings every command loads.

Every command loads the settings once (``--config``, then ``STREAMER_*``) through ``settings()``. Command groups
live one per module beside this one and register on ``app`` when ``streamer.cli`` imports them.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console

from streamer import config

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
