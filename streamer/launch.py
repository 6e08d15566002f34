"""The ``streamer`` command's entry point (the console script and ``python -m streamer``): the stop signals are
recorded before anything heavy is imported.

Importing the CLI (typer, rich) and then a worker (numpy, onnxruntime, confluent-kafka, Faust) takes from half a
second on an idle machine to several seconds on a loaded one; a SIGTERM in that time used to end the process by the
signal (-15), or -- raised as an exception inside a C extension's initialisation -- as ``ImportError:
initialization failed`` (exit 1). Here the handler that only records the request (``wiring.signals``) is installed
first, with nothing but the standard library imported; a request recorded while the CLI is imported ends the
command with exit 0 once the import is over. The long-running modes (``LONG_RUNNING``) keep the handler and ask for
the request between the steps of their start; every other command gets Python's usual behaviour back (Ctrl-C
interrupts ``streamer produce``, ``consume`` or ``top`` at once). The import of the CLI is inside ``main`` on
purpose: it is what must come after the handler.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from streamer import logs
from streamer.wiring import signals

LONG_RUNNING = ("worker", "serve")  # the commands whose start asks for the recorded stop (cli/worker.py)
ROOT_OPTIONS_WITH_VALUE = ("--config",)  # the root callback's options that take a value (cli/base.py)


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` (without the program name) runs: its first word that is neither an option of the
    root command nor such an option's value."""
    words = iter(argv)
    for word in words:
        if word in ROOT_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main() -> None:
    signals.install()
    logs.configure()  # so that a stop before the command runs is said too (the CLI configures it again)
    from streamer.cli import main as cli_main  # after the handler: see the module docstring

    try:
        signals.exit_if_requested("importing the command")
        if command_of(sys.argv[1:]) not in LONG_RUNNING:
            signals.restore_defaults()
        cli_main()
    finally:
        signals.exiting()
