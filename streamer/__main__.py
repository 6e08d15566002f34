"""``python -m streamer``: the ``streamer`` command, with the stop signals recorded from the start
(``streamer.launch``)."""

from streamer.launch import main

main()
