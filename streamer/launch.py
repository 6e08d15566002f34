"""The ``streamer`` command's entry point (the console script and ``python -m streamer``): the stop signals are
recorded before anything heavy is imported.

Importing the CLI (typer, rich) and then a worker (numpy, onnxruntime, confluent-kafka, Faust) takes from half a
second on an idle machine to several seconds on a loaded one; a SIGTERM in that time used to end the process by the
signal (-15), or -- raised as an exception inside a C extension's initialisation -- as ``ImportError:
initialization failed`` (exit 1). Here the handler that only records the request (``wiring.signals``) is installed
first, with nothing but the standard library imported, and every later step of the start asks for it. The import of
the CLI is therefore inside ``main``, on purpose: it is what must come after the handler.
"""

from __future__ import annotations

from streamer import logs
from streamer.wiring import signals


def main() -> None:
    signals.install()
    logs.configure()  # so that a stop before the command runs is said too (the CLI configures it again)
    from streamer.cli import main as cli_main  # after the handler: see the module docstring

    try:
        signals.exit_if_requested("importing the command")
        cli_main()
    finally:
        signals.exiting()
