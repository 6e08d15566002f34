"""One owner per wire format: the prediction envelope (``core.outputs.Prediction``) and the dead-letter reason
table (``core.errors.REASONS``) are declared once, and what the user reads about them -- the tables of
docs/contract.md, the OIP statuses, the CSV/Parquet columns of ``streamer batch`` -- is checked against them
here (the JSON Schemas are generated from them: ``test_schemas_agree.py``)."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from streamer.batch.files import PredictionColumns, TablePredictions
from streamer.core import outputs
from streamer.core.errors import DEAD_LETTER_REASONS, REASONS, DecodeError
from streamer.core.graph.scoring_graph import GraphResult
from streamer.oip.codec import OipError
from streamer.oip.responses import STREAMER_OUTPUTS

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def _table_after(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first Markdown table under ``heading`` in docs/contract.md."""
    text = CONTRACT.read_text()
    section = text[text.index(heading) :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_docs_reason_table_is_the_code_reason_table() -> None:
    rows = _table_after("## Dead letters")
    assert rows == [[f"`{r.name}`", str(r.http_status), r.when] for r in REASONS.values()]


def test_the_reason_set_is_the_tables() -> None:
    assert frozenset(REASONS) == DEAD_LETTER_REASONS
    assert all(reason.name == name for name, reason in REASONS.items())


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_an_oip_refusal_carries_its_reasons_status(reason: str) -> None:
    error = OipError.of(DecodeError(reason, "why"))
    assert error.status == REASONS[reason].http_status
    assert error.message.startswith(f"{reason}: ")


def test_too_large_is_413_on_oip_and_an_unknown_reason_cannot_exist() -> None:
    assert OipError.of(DecodeError("too-large", "big")).status == 413
    with pytest.raises(ValueError):
        DecodeError("made-up", "no status, no docs row: refused at construction")


def test_the_docs_field_table_names_every_field_of_the_declaration_in_order() -> None:
    named = [re.findall(r"`(\w+)`", row[0]) for row in _table_after("## Prediction envelope")]
    assert [name for names in named for name in names] == [f.name for f in outputs.FIELDS]


def test_the_per_row_fields_are_the_graph_results() -> None:
    """``outputs.result_fields`` reads a model's result by field name: the two lists are one."""
    assert tuple(f.name for f in dataclasses.fields(GraphResult)) == outputs.ROW_FIELDS


def test_the_oip_tensor_fields_and_the_closing_field_come_from_the_declaration() -> None:
    assert STREAMER_OUTPUTS == ("score", "label", "decision", "reasons", "enrichment")
    assert outputs.CLOSING == "latency_ms" and outputs.FIELD["latency_ms"].topic
    assert [f.name for f in outputs.TABLE_FIELDS] == [
        "id",
        "model",
        "version",
        "score",
        "label",
        "outputs",
        "decision",
        "reasons",
        "enrichment",
    ]


def test_a_table_has_a_column_per_table_field_then_where_the_row_came_from() -> None:
    target = io.BytesIO()
    writer = TablePredictions(target, "parquet", ["row"])
    result = GraphResult(np.array([0.25]), np.array([0]), {"p": np.array([[0.75, 0.25]])}, ["allow"], [["ok"]])
    fields = outputs.table_columns(outputs.result_fields(result), 1)
    writer.write_columns(PredictionColumns({"id": ["a"], "model": ["m"], "version": ["1"], **fields}, {"row": [1]}, 1))
    writer.close()
    table = pq.read_table(io.BytesIO(target.getvalue()))
    assert table.schema.names == [f.name for f in outputs.TABLE_FIELDS] + ["row"]
    assert table.to_pylist() == [
        {
            "id": "a",
            "model": "m",
            "version": "1",
            "score": 0.25,
            "label": 0,
            "outputs": '{"p":[0.75,0.25]}',
            "decision": "allow",
            "reasons": '["ok"]',
            "enrichment": None,
            "row": 1,
        }
    ]
