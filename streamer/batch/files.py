"""Files of ``streamer batch``: JSONL, CSV and Parquet in (as chunks of rows), the same formats out.

Reading:

- **JSONL**: one request value per line (contract section 2), read in large blocks and cut on newlines in C;
  each chunk is a ``Records`` (topic ``file:<name>``, partition 0, the 0-based line index as offset) for
  ``core.scoring.score_records`` -- the worker's own function. Blank lines are skipped (they keep their number).
- **CSV / Parquet**: one row per request, read by pyarrow a record batch at a time and turned into columns for
  ``core.columns.score_columns`` (``arrow_tables``: which columns, and what a cell is).

Writing predictions: JSONL (the prediction envelope without ``latency_ms``, as the worker writes it otherwise),
or CSV or Parquet with one column per table field of the envelope's declaration (``core.outputs.TABLE_FIELDS``,
in its order; a structured field as its JSON text, an absent one null) followed by where the row came from
(``line`` of a JSONL file, ``row`` of a CSV or Parquet file, ``partition, offset`` of a topic). Rejects are
JSON lines ``{line|row|partition+offset, error, detail, original}``, ``original`` being the input line, the CSV
row, a Parquet row as JSON, or the message value, as text.

pyarrow is imported when a CSV or Parquet file is read or written, not for JSONL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from streamer.batch.arrow_tables import TableChunk, csv_batches, table_chunk
from streamer.core import outputs
from streamer.core.errors import BatchFileError
from streamer.core.headers import model_header
from streamer.core.types import Records

if TYPE_CHECKING:
    pass

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_EXTENSIONS |= {".pq": "parquet"}
BLOCK_BYTES = 4 << 20


def format_of(path: Path | None, given: str | None, default: str = "jsonl") -> str:
    """The file format: ``given``, else from the extension (``.jsonl``/``.ndjson``/``.json``, ``.csv``,
    ``.parquet``/``.pq``), else ``default``."""
    if given is not None:
        if given not in FORMATS:
            raise BatchFileError(f"unknown format {given!r} (one of {', '.join(FORMATS)})")
        return given
    if path is None:
        return default
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise BatchFileError(f"{path}: cannot tell the format from the extension; give --input-format/--output-format")
    return found


# ------------------------------------------------------------------------------------------------ reading


@dataclass(slots=True)
class LinesChunk:
    """Requests as the worker gets them: a ``Records`` (JSONL lines, or one partition's messages of a topic).

    ``where``: ``line`` (the 1-based line is offset + 1) or ``offset`` (a topic's). ``progress``: the input
    consumed so far (bytes of a file, messages of a topic).
    """

    records: Records
    where: str
    progress: int


@dataclass(frozen=True, slots=True)
class LinesBlock:
    """``count`` consecutive lines of a JSONL file, not yet split: cheap to hand to a worker process (one bytes
    object, not one per line). ``first`` is the 0-based number of its first line, ``text`` the lines without
    the last newline, ``progress`` the bytes of the file consumed up to its end; ``model`` applies to lines that
    name none."""

    topic: str
    first: int
    text: bytes
    count: int
    progress: int
    model: str | None = None


def jsonl_blocks(path: Path, size: int, model: str | None) -> Iterator[LinesBlock]:
    """The lines of ``path`` in blocks of ``size`` (blank ones included: they keep their number), read in large
    blocks and cut in C -- no Python work per line."""
    topic = f"file:{path.name}"
    try:
        file = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror}") from None
    first = consumed = 0
    with file:
        rest = b""
        while True:
            block = file.read(BLOCK_BYTES)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            whole, rest = data[:cut], data[cut:]
            lines = whole.count(b"\n") + (1 if not block and whole and not whole.endswith(b"\n") else 0)
            start = 0
            while lines >= size or (not block and lines):
                take = min(size, lines)
                stop = _after_line(whole, start, take)
                consumed += stop - start
                yield LinesBlock(topic, first, whole[start:stop].removesuffix(b"\n"), take, consumed, model)
                first, lines, start = first + take, lines - take, stop
            rest = whole[start:] + rest
            if not block:
                return


def _after_line(text: bytes, start: int, lines: int) -> int:
    """The position just after the ``lines``-th newline from ``start``, or the end of ``text`` when it holds
    fewer: a proportional guess, corrected by counting in C and a few ``find`` calls."""
    total = text.count(b"\n", start)
    if total < lines:
        return len(text)
    position = start + (len(text) - start) * lines // total
    seen = text.count(b"\n", start, position)  # newlines in [start, position)
    while seen >= lines:  # too far: back onto the newline before, which no longer counts
        position = text.rfind(b"\n", start, position)
        seen -= 1
    while seen < lines:
        position = text.find(b"\n", position) + 1
        seen += 1
    return position


def lines_chunk(block: LinesBlock) -> LinesChunk:
    """A block's requests as the worker gets them: one ``Records`` (the 0-based line number as offset), blank
    lines skipped (they keep their number), a trailing ``\\r`` dropped."""
    lines = block.text.split(b"\n") if block.count else []
    if b"\r" in block.text:
        lines = [line.rstrip(b"\r\n") for line in lines]
    first = block.first
    if b"" in lines or any(map(bytes.isspace, lines)):
        kept = [(first + i, line) for i, line in enumerate(lines) if line.strip()]
        offsets, values = [i for i, _ in kept], [line for _, line in kept]
    else:
        offsets, values = list(range(first, first + len(lines))), lines
    n = len(values)
    headers = model_header(block.model)
    records = Records(block.topic, 0, offsets, [None] * n, values, [0] * n, [headers] * n)  # type: ignore[arg-type]
    return LinesChunk(records, "line", block.progress)


def read_jsonl(path: Path, size: int, model: str | None) -> Iterator[LinesChunk]:
    """Lines of ``path`` in chunks of ``size`` (blank lines skipped, counted in the size); ``model`` applies to
    lines that name none (as the ``streamer-model`` header does for a topic)."""
    return map(lines_chunk, jsonl_blocks(path, size, model))


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise BatchFileError("CSV and Parquet need pyarrow: pip install 'pyarrow>=15,<20'") from None
    return pyarrow


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror}") from None


def table_rows(path: Path) -> int:
    """Rows of a Parquet file (its footer), for the progress bar."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def read_table(path: Path, fmt: str, size: int, model: str | None) -> Iterator[TableChunk]:
    """Record batches of ``size`` rows of a CSV or Parquet file, converted for ``score_columns``.

    ``progress`` of a chunk: bytes read of a CSV file, rows of a Parquet file (``table_rows`` is the total).
    """
    pa = _pyarrow()
    source = f"file:{path.name}"
    first = 0
    try:
        with open(path, "rb") as file:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                batches: Iterator[Any] = pq.ParquetFile(file).iter_batches(batch_size=size)
            else:
                batches = csv_batches(path, file, size)
            for batch in batches:
                progress = first + batch.num_rows if fmt == "parquet" else file.tell()
                yield table_chunk(pa, source, batch, first, model, progress, "json" if fmt == "parquet" else "csv")
                first += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise BatchFileError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------------------------------ writing


@dataclass(slots=True)
class PredictionColumns:
    """Predictions of a chunk as columns, in input order: what a CSV or Parquet output holds.

    ``fields``: a column per table field of the envelope (``outputs.TABLE_FIELDS``, by name; absent or None:
    null throughout), as a numpy array, a list (None: null), or an Arrow array. ``where``: the columns saying
    where each came from (``line``, ``row``, or ``partition`` and ``offset``).
    """

    fields: dict[str, Any]
    where: dict[str, np.ndarray]
    size: int

    def __len__(self) -> int:
        return self.size


class JsonlPredictions:
    """The prediction envelope, one per line (open bodies from the scoring path, closed here)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def write_text(self, lines: bytes) -> None:
        """Write closed prediction lines (``outputs.close_without_latency``)."""
        if lines:
            self._file.write(lines)

    def close(self) -> None:
        self._file.flush()


# The Arrow type of each table kind of the declaration (``json``: the field's JSON text).
_ARROW_TYPES = {"string": "string", "json": "string", "float64": "float64", "int64": "int64", "bool": "bool_"}


class TablePredictions:
    """CSV or Parquet predictions: one Arrow record batch per chunk (Parquet row groups of ~128k rows), with a
    column per table field of the prediction envelope, in declaration order, then the ``where`` columns."""

    def __init__(self, target: Path | IO[bytes], fmt: str, where: Sequence[str]) -> None:
        pa = _pyarrow()
        self._types = {f.name: getattr(pa, _ARROW_TYPES[f.table])() for f in outputs.TABLE_FIELDS}  # type: ignore[index]
        fields = [
            *(pa.field(name, kind) for name, kind in self._types.items()),
            *(pa.field(name, pa.int64()) for name in where),
        ]
        self._pa = pa
        self._schema = pa.schema(fields)
        self._where = list(where)
        self._fmt = fmt
        self._pending: list[Any] = []
        self._held = 0
        if fmt == "parquet":
            import pyarrow.parquet as pq

            # Dictionary pages for the repeated columns only: trying them on unique ids costs a third of the time.
            repeated = [f.name for f in outputs.TABLE_FIELDS if f.table == "string" and f.name != "id"]
            self._writer: Any = pq.ParquetWriter(target, self._schema, use_dictionary=repeated)
        else:
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(target, self._schema)

    def write_columns(self, columns: PredictionColumns) -> None:
        if not len(columns):
            return
        unknown = set(columns.fields) - set(self._types)
        if unknown:
            raise ValueError(f"no table field {sorted(unknown)} in the prediction envelope")
        pa = self._pa
        n = len(columns)
        arrays = [
            *(_arrow(pa, columns.fields.get(name), kind, n) for name, kind in self._types.items()),
            *(pa.array(columns.where[name], pa.int64()) for name in self._where),
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        if self._fmt != "parquet":
            self._writer.write_batch(batch)
            return
        self._pending.append(batch)
        self._held += n
        if self._held >= 131_072:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(self._pa.Table.from_batches(self._pending, self._schema))
            self._pending, self._held = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _arrow(pa: Any, values: Any, kind: Any, size: int) -> Any:
    """An Arrow array of ``kind``; None is a column of nulls, and a list of one repeated string (model, version)
    is built in C."""
    if values is None:
        return pa.nulls(size, kind)
    if isinstance(values, pa.Array):
        return values if values.type == kind else values.cast(kind)
    if kind == pa.string() and isinstance(values, list) and values and values.count(values[0]) == len(values):
        return pa.repeat(pa.scalar(values[0], kind), len(values))
    return pa.array(values, kind)


class Rejects:
    """Rejected rows as JSON lines: where, ``error`` (the dead-letter reason), ``detail``, ``original``."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def write(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            self._file.write("".join(json.dumps(entry) + "\n" for entry in entries))

    def close(self) -> None:
        self._file.flush()
