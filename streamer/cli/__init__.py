"""The ``streamer`` command: one module per command group, each parsing its options and calling one function.

A user's mistake ends any command with one line on stderr and exit code 2, never a traceback: a
``StreamerError`` (bad setting, refused model, unknown name, unreachable server) says what to fix, and an
``OSError`` that reaches this far (a file that is not there, a directory that cannot be written) is named with
its path and the fix (``os_error_line``). A ``FatalError`` exits with its own code. Anything else is a bug and
keeps its traceback (exit 1).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

from streamer.cli import config as config_command
from streamer.cli import graph as graph_command
from streamer.cli.base import _State, app, configure_logs, error, out, settings
from streamer.core.errors import FatalError, StreamerError

# The order of ``streamer --help``: a user's path, from the embedded stack to the tools.
COMMAND_MODULES = ("worker", "messages", "batch", "top", "dev", "topics", "models", "evaluation", "features")
for _module in COMMAND_MODULES:
    importlib.import_module(f"streamer.cli.{_module}")
graph_command.register(app, settings, out)
config_command.register(app, lambda: _State.config_path)

__all__ = ["app", "main"]

_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOSPC: "free some space",
    errno.EROFS: "choose a writable place",
}


def os_error_line(exc: OSError) -> str:
    """An OS error as one line: the path, what went wrong, what to do."""
    what = exc.strerror or str(exc)
    fix = _FIXES.get(exc.errno or 0)
    subject = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{subject}{what}" + (f" ({fix})" if fix else "")


def main() -> None:
    configure_logs()
    try:
        app()
    except StreamerError as exc:
        error(exc)
        sys.exit(exc.exit_code if isinstance(exc, FatalError) else 2)
    except BrokenPipeError:  # `streamer consume | head`: the reader left; not an error of this command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except OSError as exc:
        error(os_error_line(exc))
        sys.exit(2)
