"""Files of ``streamer batch``: JSONL, CSV and Parquet in (as chunks of rows), the same formats out.

Reading:

- **JSONL**: one request value per line (contract section 2), read in large blocks and cut on newlines in C;
  each chunk is a ``Records`` (topic ``file:<name>``, partition 0, the 0-based line index as offset) for
  ``core.scoring.score_records`` -- the worker's own function. Blank lines are skipped (they keep their number).
- **CSV / Parquet**: one row per request, ``{"id", "model", "features": {<feature columns>}}``; columns are the
  cards' feature names, plus optional ``id`` and ``model`` (other columns are not part of the request). Read by
  pyarrow a record batch at a time and turned into ``core.columns.Column`` arrays (one numpy array per column,
  no Python object per row) for ``core.columns.score_columns``. A missing ``id`` is the 1-based row number; a
  number id is its decimal text (a CSV has no types). CSV cells are read as text and converted per column in
  C: a cell that parses as a number is a number (``nan`` is a missing value, like an empty cell; ``inf`` is
  out of range, like JSON's ``1e999``), any other text is a string (a category, or ``schema``). Parquet
  columns keep their types: integers and floats are numbers (null and NaN are missing values), strings are
  strings, anything else (booleans, dates) is a type no request can hold (``schema``).

Writing predictions: JSONL (the prediction envelope without ``latency_ms``, as the worker writes it otherwise),
CSV or Parquet with columns ``id, model, version, score, label`` and where the row came from (``line`` of a
JSONL file, ``row`` of a CSV or Parquet file, ``partition, offset`` of a topic). Rejects are JSON lines
``{line|row|partition+offset, error, detail, original}``, ``original`` being the input line, the CSV row, a
Parquet row as JSON, or the message value, as text.

pyarrow is imported when a CSV or Parquet file is read or written, not for JSONL.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from streamer.core.columns import MISSING, NUMBER, TEXT, WRONG, Column
from streamer.core.envelope import model_header
from streamer.core.errors import BatchFileError
from streamer.core.types import Records

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_EXTENSIONS |= {".pq": "parquet"}
BLOCK_BYTES = 4 << 20
# A CSV cell is a number when it matches this (RE2, case-insensitive): what Arrow's float parser reads.
NUMBER_PATTERN = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"


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


@dataclass(slots=True)
class TableChunk:
    """A record batch of a CSV or Parquet file, ready for ``core.columns.score_columns``.

    Row ``i`` of the chunk is row ``first + i + 1`` of the file (1-based, header not counted). ``requested``
    maps each model string of the ``model`` column (None: none named) to its rows; ``ids`` is the id of every
    row (the ``id`` column as text, else the row number).
    """

    source: str
    batch: pa.RecordBatch
    first: int
    columns: dict[str, Column]
    order: list[str]
    requested: dict[str | None, np.ndarray]
    ids: pa.Array
    progress: int
    original: str = "csv"  # how a rejected row is shown: "csv" (the row's cells) or "json" (a Parquet row)

    def __len__(self) -> int:
        return self.batch.num_rows

    def ids_of(self, rows: np.ndarray) -> list[str]:
        return self.ids.take(rows).to_pylist()  # type: ignore[no-any-return]

    def originals(self, rows: Sequence[int]) -> list[str]:
        """The rejected rows as text: the CSV row (cells as read), or a Parquet row as a JSON object."""
        if not rows:
            return []
        picked = self.batch.take(rows).to_pylist()
        if self.original == "json":
            return [json.dumps(row, default=str) for row in picked]
        texts = []
        for row in picked:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in row.values()])
            texts.append(buffer.getvalue())
        return texts


def read_jsonl(path: Path, size: int, model: str | None) -> Iterator[LinesChunk]:
    """Non-blank lines of ``path`` in chunks of ``size``; ``model`` applies to lines that name none (as the
    ``streamer-model`` header does for a topic)."""
    headers = model_header(model)
    topic = f"file:{path.name}"
    offsets: list[int] = []
    values: list[bytes] = []
    number = 0
    consumed = 0
    try:
        file = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror}") from None
    with file:
        rest = b""
        while True:
            block = file.read(BLOCK_BYTES)
            if block:
                data = rest + block
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                text, rest = data[:cut], data[cut + 1 :]
                consumed += cut + 1
            else:
                text, rest = rest, b""
                consumed += len(text)
            lines = text.split(b"\n") if block or text else []
            if b"\r" in text:
                lines = [line.rstrip(b"\r\n") for line in lines]
            if b"" in lines or any(map(bytes.isspace, lines)):
                kept = [(number + i, line) for i, line in enumerate(lines) if line.strip()]
                offsets += [i for i, _ in kept]
                values += [line for _, line in kept]
            else:
                offsets += range(number, number + len(lines))
                values += lines
            number += len(lines)
            while len(offsets) >= size or (not block and offsets):
                take = min(size, len(offsets))
                records = Records(topic, 0, offsets[:take], [None] * take, values[:take], [0] * take, [headers] * take)
                del offsets[:take], values[:take]
                yield LinesChunk(records, "line", consumed)
            if not block:
                return


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
                batches = _csv_batches(path, file, size)
            for batch in batches:
                progress = first + batch.num_rows if fmt == "parquet" else file.tell()
                yield _table_chunk(pa, source, batch, first, model, progress, "json" if fmt == "parquet" else "csv")
                first += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise BatchFileError(f"{path}: {exc}") from None


def _csv_batches(path: Path, file: IO[bytes], size: int) -> Iterator[Any]:
    """A CSV file a batch at a time, every column as text (converted per column afterwards, see the module
    docstring); an empty cell is null. Batches are re-cut to ``size`` rows."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    header = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16)).schema.names
    reader = pcsv.open_csv(
        file,
        read_options=pcsv.ReadOptions(block_size=max(1 << 20, size * 64)),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    pending: list[Any] = []
    held = 0
    for batch in reader:
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            table = pa.Table.from_batches(pending)
            yield from table.slice(0, size).combine_chunks().to_batches(max_chunksize=size)
            rest = table.slice(size)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield from pa.Table.from_batches(pending).combine_chunks().to_batches(max_chunksize=size)


def _table_chunk(
    pa: Any, source: str, batch: Any, first: int, model: str | None, progress: int, original: str
) -> TableChunk:
    names = batch.schema.names
    n = batch.num_rows
    text_numbers = original == "csv"
    columns = {
        name: to_column(batch.column(i), text_numbers) for i, name in enumerate(names) if name not in ("id", "model")
    }
    row_ids = pa.array(np.arange(first + 1, first + n + 1, dtype=np.int64)).cast(pa.string())
    ids = row_ids
    if "id" in names:
        given = _as_text(pa, batch.column(names.index("id")))
        ids = pa.compute.if_else(pa.compute.is_null(given), row_ids, given) if given.null_count else given
    requested: dict[str | None, np.ndarray] = {}
    if "model" in names:
        models = _as_text(pa, batch.column(names.index("model"))).dictionary_encode()
        indices = models.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        for code in np.unique(indices).tolist():
            name = model if code < 0 else models.dictionary[code].as_py()
            rows = np.flatnonzero(indices == code)
            previous = requested.get(name)
            requested[name] = rows if previous is None else np.sort(np.concatenate([previous, rows]))
    else:
        requested[model] = np.arange(n, dtype=np.int64)
    order = [name for name in names if name in columns]
    return TableChunk(source, batch, first, columns, order, requested, ids, progress, original)


def _as_text(pa: Any, array: Any) -> Any:
    """An id or model column as strings (a number is its decimal text)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string(array.type):
        return array
    try:
        return array.cast(pa.string())
    except pa.ArrowException:
        return pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())


def to_column(array: Any, text_numbers: bool = True) -> Column:
    """An Arrow column as a ``Column``: numbers in C; text and other types classified per cell (see above).

    ``text_numbers``: text that parses as a number is that number (CSV, where every cell is text); otherwise
    (Parquet, whose columns are typed) text is text.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        return to_column(array.dictionary_decode(), text_numbers)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return Column(_floats(array))  # nulls become NaN: a missing value either way
    if pa.types.is_null(kind):
        return Column(np.full(len(array), np.nan))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if not text_numbers:
            return _text_column(array, numbers=False)
        try:
            return Column(_floats(pc.cast(array, pa.float64())))
        except pa.ArrowInvalid:
            return _text_column(array)
    kinds = np.full(len(array), WRONG, dtype=np.int8)
    if array.null_count:
        kinds[array.is_null().to_numpy(zero_copy_only=False)] = MISSING
    return Column(np.full(len(array), np.nan), kinds, type_name=_type_name(kind))


def _floats(array: Any) -> np.ndarray:
    import pyarrow as pa

    if array.type != pa.float64():
        array = array.cast(pa.float64(), safe=False)
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def _text_column(array: Any, numbers: bool = True) -> Column:
    """A text column: numbers where they parse (``numbers``), the rest kept as text, per cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    null = array.is_null().to_numpy(zero_copy_only=False)
    values = np.full(len(array), np.nan)
    is_number = np.zeros(len(array), dtype=bool)
    if numbers:
        numeric = pc.fill_null(pc.match_substring_regex(array, NUMBER_PATTERN), False)
        is_number = numeric.to_numpy(zero_copy_only=False).copy()
        try:
            values = _floats(pc.cast(pc.if_else(numeric, array, pa.scalar(None, pa.string())), pa.float64()))
        except pa.ArrowInvalid:  # a cell the pattern takes and Arrow does not: decide those in Python
            cells = array.to_pylist()
            for i in np.flatnonzero(is_number).tolist():
                try:
                    values[i] = float(cells[i])
                except ValueError:
                    is_number[i] = False
    kinds = np.full(len(array), TEXT, dtype=np.int8)
    kinds[is_number] = NUMBER
    kinds[null] = MISSING
    cells = array.to_pylist()
    texts = {i: cells[i] for i in np.flatnonzero(kinds == TEXT).tolist()}
    return Column(values, kinds, texts)


def _type_name(kind: Any) -> str:
    import pyarrow as pa

    return "bool" if pa.types.is_boolean(kind) else str(kind)


# ------------------------------------------------------------------------------------------------ writing


@dataclass(slots=True)
class PredictionColumns:
    """Predictions of a chunk as columns, in input order: what a CSV or Parquet output holds.

    ``where``: the columns saying where each came from (``line``, ``row``, or ``partition`` and ``offset``).
    """

    ids: Any  # pa.Array of strings, or a list of str
    model: list[str] | Any
    version: list[str] | Any
    score: np.ndarray
    label: np.ndarray | list[int | None] | None
    where: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.score)


class JsonlPredictions:
    """The prediction envelope, one per line (open bodies from the scoring path, closed here)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def write_bodies(self, bodies: list[bytes]) -> None:
        if bodies:
            self._file.write(b"}\n".join(bodies) + b"}\n")

    def close(self) -> None:
        self._file.flush()


class TablePredictions:
    """CSV or Parquet predictions: one Arrow record batch per chunk (Parquet row groups of ~128k rows)."""

    def __init__(self, target: Path | IO[bytes], fmt: str, where: Sequence[str]) -> None:
        pa = _pyarrow()
        fields = [
            pa.field("id", pa.string()),
            pa.field("model", pa.string()),
            pa.field("version", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("label", pa.int64()),
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
            self._writer: Any = pq.ParquetWriter(target, self._schema, use_dictionary=["model", "version"])
        else:
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(target, self._schema)

    def write_columns(self, columns: PredictionColumns) -> None:
        if not len(columns):
            return
        pa = self._pa
        n = len(columns)
        label = pa.array(columns.label, pa.int64()) if columns.label is not None else pa.nulls(n, pa.int64())
        arrays = [
            _strings(pa, columns.ids),
            _strings(pa, columns.model),
            _strings(pa, columns.version),
            pa.array(columns.score, pa.float64()),
            label,
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


def _strings(pa: Any, values: Any) -> Any:
    """An Arrow string array; a column of one repeated value (model, version) is built in C."""
    if isinstance(values, pa.Array):
        return values
    if values and values.count(values[0]) == len(values):
        return pa.repeat(pa.scalar(values[0], pa.string()), len(values))
    return pa.array(values, pa.string())


class Rejects:
    """Rejected rows as JSON lines: where, ``error`` (the dead-letter reason), ``detail``, ``original``."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def write(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            self._file.write("".join(json.dumps(entry) + "\n" for entry in entries))

    def close(self) -> None:
        self._file.flush()
