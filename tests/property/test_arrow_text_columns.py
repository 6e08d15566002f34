"""A CSV chunk's text column reads the same whether it is an array of its own or a slice of the reader's batch
(every chunk but a file's first is one): a sliced column once went through ``pc.if_else``, which in pyarrow 19
reads past a sliced string array's data buffer, so that heap garbage parsed as numbers and a ``1e999`` cell
lost its ``non-finite`` reason now and then (apache/arrow#41479)."""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from streamer.batch.arrow_tables import to_column
from streamer.core.columns import MISSING, NUMBER, TEXT

cells = st.one_of(
    st.none(),
    st.sampled_from(["1e999", "-1e999", "nan", "inf", "0.0", "1e+39", "12x", "night", "", " 1", "abc"]),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
)


def expected(cell: str | None) -> tuple[int, float]:
    """The kind and value of one cell, by Python's own float()."""
    if cell is None:
        return MISSING, math.nan
    try:
        value = float(cell)
    except ValueError:
        return TEXT, math.nan
    return (NUMBER, value) if cell.strip() == cell else (TEXT, math.nan)


@given(before=st.lists(cells, max_size=12), chunk=st.lists(cells, min_size=1, max_size=12), after=st.lists(cells))
def test_a_sliced_text_column_reads_as_its_own_cells(
    before: list[str | None], chunk: list[str | None], after: list[str | None]
) -> None:
    batch = pa.array([*before, *chunk, *after], pa.string())
    column = to_column(batch.slice(len(before), len(chunk)))
    for i, cell in enumerate(chunk):
        kind, value = expected(cell)
        if column.kinds is None:  # every cell a number or null: one float array, a null is NaN (missing)
            kind = NUMBER
        else:
            assert column.kinds[i] == kind, (i, cell, column.kinds[i])
        if kind == NUMBER:
            assert column.values[i] == value or (math.isnan(value) and math.isnan(column.values[i])), (i, cell)
