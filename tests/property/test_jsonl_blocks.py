"""A JSONL file cut into blocks of lines in C, and split into requests where they are scored, gives every line
exactly once, numbered as in the file, whatever the read size.

``batch.files.jsonl_blocks`` hands ``streamer batch``'s worker processes blocks of ``size`` lines (one bytes
object each, blank lines included: they keep their number) and ``lines_chunk`` splits one into the requests
the worker scores: each non-blank line, its trailing carriage returns dropped, at offset = its 0-based number.
Pure but for one temporary file per example.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from streamer.batch import files

pieces = st.sampled_from([b"{}", b"", b"  ", b"\t", b'{"a": 1}', b'{"a": 1}\r', b"x" * 40, b"\r"])


def expected(data: bytes) -> list[tuple[int, bytes]]:
    """(line number, request) of every non-blank line, as a reader of the file by lines sees it."""
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()
    return [(n, line.rstrip(b"\r\n")) for n, line in enumerate(lines) if line.strip()]


@given(st.lists(pieces, max_size=40), st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]), st.integers(1, 9), st.data())
def test_every_line_once_in_order_with_its_number(
    lines: list[bytes], end: bytes, size: int, data: st.DataObject
) -> None:
    content = b"\n".join(lines) + end
    read_bytes = data.draw(st.sampled_from([1, 7, 64, files.BLOCK_BYTES]))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "in.jsonl"
        path.write_bytes(content)
        default, files.BLOCK_BYTES = files.BLOCK_BYTES, read_bytes
        try:
            blocks = list(files.jsonl_blocks(path, size, "m"))
        finally:
            files.BLOCK_BYTES = default
    chunks = [files.lines_chunk(block) for block in blocks]
    got = [(offset, value) for c in chunks for offset, value in zip(c.records.offsets, c.records.values, strict=True)]
    assert got == expected(content)
    assert all(block.count == size for block in blocks[:-1]) and all(block.count for block in blocks)
    assert [block.first for block in blocks] == [size * k for k in range(len(blocks))]
    assert not blocks or blocks[-1].progress == len(content)
    assert all(chunk.records.topic == "file:in.jsonl" for chunk in chunks)
    assert all(headers == [("streamer-model", b"m")] for c in chunks for headers in c.records.headers)
