"""The encoders of the prediction envelope write exactly what its declaration says, on arbitrary values.

``outputs.encode_single_predictions`` (a bytes template generated from the field order, formatted per row) and
``outputs.open_bodies`` (msgspec's encoding of ``Prediction`` structs), both closed by ``finish_predictions``,
are byte for byte ``msgspec.json.encode(Prediction(...))``; ``json_objects`` is each row's JSON object; and
every value decodes back through the declaration.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core import outputs

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=12)  # quotes, backslashes, newlines, "%" and non-ASCII included
names = st.lists(text, max_size=3, unique=True)
cell = finite | st.integers(-(2**53), 2**53) | text | st.lists(finite, max_size=3) | st.none()


@st.composite
def batches(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    column = lambda element: st.lists(element, min_size=n, max_size=n)  # noqa: E731
    rules = draw(st.booleans())
    rows = {
        "score": draw(column(finite)),
        "label": draw(st.none() | column(st.integers(-(2**53), 2**53))),
        "outputs": {name: draw(column(cell)) for name in draw(names)},
        "decision": draw(column(text)) if rules else None,
        "reasons": draw(column(st.lists(text, max_size=3))) if rules else None,
        "enrichment": draw(st.none() | column(st.sampled_from(get_args(outputs.EnrichmentOutcome)))),
    }
    assert tuple(rows) == outputs.ROW_FIELDS, "a per-row field of the declaration has no strategy here"
    return {
        "ids": draw(column(text)),
        "model": draw(text),
        "version": str(draw(st.integers(1, 10_000))),
        "rows": rows,
        "topic": draw(st.text(min_size=1, max_size=12)),
        "partition": draw(st.integers(0, 1000)),
        "offsets": draw(column(st.integers(0, 2**62))),
        "timestamps": draw(column(st.integers(0, 2**40))),
    }


def declared(batch: dict[str, Any], k: int, latency: float) -> outputs.Prediction:
    """Row k of the batch as the declaration's struct (an absent optional field unset)."""
    rows = batch["rows"]
    fields = outputs.request_fields(rows, k, k + 1, arrays=False)
    source = outputs.Source(batch["topic"], batch["partition"], batch["offsets"][k])
    return outputs.Prediction(
        id=batch["ids"][k],
        model=batch["model"],
        version=batch["version"],
        source=source,
        latency_ms=latency,
        **fields,
    )


@given(batches(), finite.filter(lambda x: abs(x) < 2**40))
def test_the_bulk_encoder_writes_the_declarations_bytes(batch: dict[str, Any], now_ms: float) -> None:
    head = batch["ids"], batch["model"], batch["version"], batch["rows"]
    bodies = outputs.encode_single_predictions(*head, batch["topic"], batch["partition"], batch["offsets"])
    values, latencies = outputs.finish_predictions(bodies, batch["timestamps"], now_ms)
    latencies = latencies.tolist()
    expected = [msgspec.json.encode(declared(batch, k, latencies[k])) for k in range(len(values))]
    assert values == expected
    assert [outputs.decode(value) for value in values] == [declared(batch, k, latencies[k]) for k in range(len(values))]


@given(batches(), st.booleans())
def test_the_general_encoder_writes_the_declarations_bytes(batch: dict[str, Any], arrays: bool) -> None:
    n = len(batch["ids"])
    rows = batch["rows"]
    predictions = [
        outputs.Prediction(
            id=batch["ids"][0],
            model=batch["model"],
            version=batch["version"],
            source=outputs.Source(batch["topic"], batch["partition"], batch["offsets"][0]),
            **outputs.request_fields(rows, 0, n, arrays=True),
        )
    ]
    if not arrays:
        predictions = [declared(batch, k, 0.0) for k in range(n)]
        predictions = [msgspec.structs.replace(p, latency_ms=msgspec.UNSET) for p in predictions]
    values, latencies = outputs.finish_predictions(outputs.open_bodies(predictions), [0] * len(predictions), 1.5)
    closed = [msgspec.structs.replace(p, latency_ms=1.5) for p in predictions]
    assert values == [msgspec.json.encode(p) for p in closed]
    assert list(latencies) == [1.5] * len(predictions)


@given(batches())
def test_table_columns_hold_each_rows_json(batch: dict[str, Any]) -> None:
    rows = batch["rows"]
    n = len(batch["ids"])
    columns = outputs.table_columns({**rows, "score": np.asarray(rows["score"])}, n)
    assert columns["outputs"] == [msgspec.json.encode({k: v[i] for k, v in rows["outputs"].items()}) for i in range(n)]
    if rows["reasons"] is None:
        assert columns["reasons"] is None and columns["decision"] is None
    else:
        assert columns["reasons"] == [msgspec.json.encode(r) for r in rows["reasons"]]
        assert columns["decision"] == rows["decision"]
    assert columns["enrichment"] == rows["enrichment"]  # a string column as it is, or null


@st.composite
def result_arrays(draw: Any) -> dict[str, Any]:
    """Per-row fields as a model's result holds them: numpy columns, 2-D ones (class probabilities) included."""
    n = draw(st.integers(1, 6))
    floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
    outputs_ = {}
    for name in draw(names):
        width = draw(st.integers(0, 3))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
        element = st.integers(-(2**53), 2**53) if dtype is np.int64 else floats
        values = draw(st.lists(element, min_size=n * width, max_size=n * width))
        outputs_[name] = np.asarray(values, dtype=dtype).reshape(n, width)
    label = draw(st.none() | st.lists(st.integers(-(2**31), 2**31), min_size=n, max_size=n))
    return {
        "score": np.asarray(draw(st.lists(floats, min_size=n, max_size=n)), dtype=np.float32),
        "label": None if label is None else np.asarray(label, dtype=np.int64),
        "outputs": outputs_,
        "decision": None,
        "reasons": None,
        "enrichment": None,
    }


@given(result_arrays())
def test_the_bulk_encoder_takes_the_results_arrays_as_they_are(rows: dict[str, Any]) -> None:
    """A 2-D output encoded a column at a time (no list per row) writes what msgspec writes of each row's list."""
    n = len(rows["score"])
    ids, offsets = [f"r{k}" for k in range(n)], list(range(n))
    listed = {
        "score": rows["score"].tolist(),
        "label": None if rows["label"] is None else rows["label"].tolist(),
        "outputs": {name: column.tolist() for name, column in rows["outputs"].items()},
        "decision": None,
        "reasons": None,
        "enrichment": None,
    }
    from_arrays = outputs.encode_single_predictions(ids, "m", "1", rows, "t", 0, offsets)
    assert from_arrays == outputs.encode_single_predictions(ids, "m", "1", listed, "t", 0, offsets)
    batch = {"ids": ids, "model": "m", "version": "1", "rows": listed, "topic": "t", "partition": 0}
    values, latencies = outputs.finish_predictions(from_arrays, [0] * n, 2.0)
    expected = [msgspec.json.encode(declared({**batch, "offsets": offsets}, k, 2.0)) for k in range(n)]
    assert values == expected and latencies.tolist() == [2.0] * n
