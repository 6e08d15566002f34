"""CSV and Parquet rows as the column path of ``streamer batch`` takes them: Arrow record batches ->
``TableChunk`` (one ``core.columns.Column`` per column, no Python object per row).

A row is the request ``{"id", "model", "features": {<feature columns>}}``: the columns are the cards' feature
names, plus optional ``id`` and ``model`` (other columns are not part of the request). A missing ``id`` is the
1-based row number; a number id is its decimal text (a CSV has no types). CSV cells are read as text and
converted per column in C: a cell that parses as a number is a number (``nan`` is a missing value, like an
empty cell; ``inf`` is out of range, like JSON's ``1e999``), any other text is a string (a category, or
``schema``). Parquet columns keep their types: integers and floats are numbers (null and NaN are missing
values), strings are strings, anything else (booleans, dates) is a type no request can hold (``schema``). What
each kind of cell then means to a model is ``core.value_rules``', as for a request.

pyarrow is imported when a table is read, not when this module is (the JSONL path never needs it).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from streamer.core.columns import MISSING, NUMBER, TEXT, WRONG, Column

if TYPE_CHECKING:
    import pyarrow as pa

# A CSV cell is a number when it matches this (RE2, case-insensitive): what Arrow's float parser reads.
NUMBER_PATTERN = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"


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


def csv_batches(path: Path, file: IO[bytes], size: int) -> Iterator[Any]:
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


def table_chunk(
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
            # The cells the pattern takes, cast alone: not ``pc.if_else(numeric, array, null)``, which on a sliced
            # string array (every chunk but a file's first) reads past its data buffer in pyarrow 19 (apache/arrow
            # #41479): parsed garbage then passed for numbers, a 1e999 cell among them.
            values[is_number] = _floats(pc.cast(array.filter(numeric), pa.float64()))
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
