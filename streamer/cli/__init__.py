"""The ``streamer`` command: one module per command group, each parsing its options and calling one function.

A ``StreamerError`` (bad setting, refused model, unreachable server) ends any command with one line on stderr
and exit code 2, never a traceback: these are operator errors, and the line names the file or the setting to
fix. A ``FatalError`` exits with its own code.
"""

from __future__ import annotations

import importlib
import sys

from streamer import logs
from streamer.cli import config as config_command
from streamer.cli import graph as graph_command
from streamer.cli.base import _State, app, err, out, settings
from streamer.core.errors import FatalError, StreamerError

# The order of ``streamer --help``: a user's path, from the embedded stack to the tools.
COMMAND_MODULES = ("worker", "messages", "batch", "top", "dev", "topics", "models", "evaluation", "features")
for _module in COMMAND_MODULES:
    importlib.import_module(f"streamer.cli.{_module}")
graph_command.register(app, settings, out)
config_command.register(app, lambda: _State.config_path)

__all__ = ["app", "main"]


def main() -> None:
    logs.configure()
    try:
        app()
    except StreamerError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code if isinstance(exc, FatalError) else 2)
