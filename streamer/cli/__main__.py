"""``python -m streamer.cli``: the ``streamer`` command."""

from streamer.cli import main

main()
