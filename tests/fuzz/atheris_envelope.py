"""Coverage-guided fuzzing of the request and feedback decoders with atheris (libFuzzer), outside pytest.

Run (atheris installs from a manylinux wheel on CPython 3.11: ``.venv/bin/pip install atheris``)::

    .venv/bin/python tests/fuzz/atheris_envelope.py -runs=200000            # N iterations
    .venv/bin/python tests/fuzz/atheris_envelope.py -max_total_time=60 CORPUS_DIR

Each input is split in two by its first byte: a batch of two request values goes through
``requests.decode_requests`` (the bulk ASCII path and the per-row path), and the whole input through it alone
and through ``decode_label``. Anything but a ``DecodeError`` with a documented reason is a crash
(libFuzzer writes the input to ``crash-*``). Seeds: valid requests, so mutations start inside the grammar.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from streamer.core import labels, requests
    from streamer.core.errors import DEAD_LETTER_REASONS, DecodeError


def one_input(data: bytes) -> None:
    cut = data[0] % (len(data) or 1) if data else 0
    batch = [data[1 : 1 + cut], data[1 + cut :]]
    decoded = requests.decode_requests(batch, max_rows=100)
    assert sorted([*decoded.rows, *decoded.errors]) == [0, 1], decoded
    alone = requests.decode_requests([data], max_rows=100)
    for error in [*decoded.errors.values(), *alone.errors.values()]:
        assert error.reason in DEAD_LETTER_REASONS
    try:
        labels.decode_label(data)
    except DecodeError as exc:
        assert exc.reason in DEAD_LETTER_REASONS


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
