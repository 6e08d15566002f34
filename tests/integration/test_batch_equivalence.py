"""The columnar path of `streamer batch` (CSV, Parquet) against the worker's own `score_records`, row by row.

A table row is the request ``{"id", "model", "features": {...}}`` (see ``adapters/batch_files.py``); each test
writes random rows -- numbers, nulls, NaN, infinities, numbers beyond float32, text, categories, booleans,
unknown models -- as a CSV or Parquet file, and also as the JSON requests those rows mean, and requires the
same outcome for every row: the same dead-letter reason, or the same score (to 1e-6) from the same model
version. Real models (the shipped ``fraud`` and a copy whose card takes missing values and a categorical
feature), real ONNX Runtime, real pyarrow; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from streamer import synthetic
from streamer.adapters import model_repository
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.batch.files import read_table
from streamer.batch.offline import ChunkScorer
from streamer.batch.scored import ScoredTable
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records
from tests.conftest import REPO

FEATURES = synthetic.FEATURES
CATEGORIES = ["night", "day"]


class Inf:
    """A number beyond float64: ``1e999`` in JSON and CSV, ``inf`` in Parquet."""


class Nan:
    """NaN: a missing value (``null`` in JSON; ``nan`` in CSV, NaN in Parquet)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, OnnxScorer]:
    """``fraud`` as shipped, and ``lax``: the same model file with allow_missing and ``hour`` categorical."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(REPO / "models" / "fraud", root / "fraud")
    lax = root / "lax" / "1"
    shutil.copytree(REPO / "models" / "fraud" / "1", lax)
    card = (lax / "card.toml").read_text().replace('name = "fraud"', 'name = "lax"')
    card = card.replace(
        "threshold = 0.5", f"threshold = 0.5\nallow_missing = true\ncategorical = {{ hour = {CATEGORIES} }}"
    )
    (lax / "card.toml").write_text(card)
    scan = model_repository.scan(root)
    assert set(scan.loaded) == {"fraud", "lax"}, scan.refused
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    return Catalog(cards, "fraud"), OnnxScorer(scan.loaded)


def _json_value(cell: Any) -> str:
    if cell is None or cell is Nan:
        return "null"
    if cell is Inf:
        return "1e999"
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float):
        return repr(cell)
    return json.dumps(cell)


def request_of(row: dict[str, Any]) -> bytes:
    """The JSON request a table row means (absent features stay absent)."""
    features = ",".join(f'"{name}":{_json_value(row[name])}' for name in row if name not in ("id", "model"))
    head = ""
    if row.get("id") is not None:
        head += f'"id":{json.dumps(row["id"])},'
    if row.get("model") is not None:
        head += f'"model":{json.dumps(row["model"])},'
    return ("{" + head + '"features":{' + features + "}}").encode()


def _csv_cell(cell: Any) -> str:
    if cell is None:
        return ""
    if cell is Nan:
        return "nan"
    if cell is Inf:
        return "1e999"
    if isinstance(cell, float):
        return repr(cell)
    text = str(cell)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def stream_outcomes(rows: list[dict[str, Any]], catalog: Catalog, scorer: OnnxScorer) -> list[tuple[str, Any]]:
    """What the worker makes of the rows' requests: ("score", (model@version, score)) or ("error", reason)."""
    values = [request_of(row) for row in rows]
    scored = score_records(Records.of("t", 0, list(range(len(values))), values), catalog, scorer.infer)
    outcomes: list[tuple[str, Any]] = []
    for row, body in enumerate(scored.bodies):
        if body is None:
            outcomes.append(("error", scored.errors[row].reason))
        else:
            prediction = json.loads(body + b"}")
            outcomes.append(("score", (f"{prediction['model']}@{prediction['version']}", prediction["score"])))
    return outcomes


def table_outcomes(path: Path, fmt: str, catalog: Catalog, scorer: OnnxScorer, size: int) -> list[tuple[str, Any]]:
    score = ChunkScorer(catalog, scorer.infer)
    outcomes: dict[int, tuple[str, Any]] = {}
    for chunk in read_table(path, fmt, size, None):
        scored = score(chunk)
        assert isinstance(scored, ScoredTable)
        columns = scored.columns()
        fields = columns.fields
        scores = np.asarray(fields["score"]).tolist()
        for row, model, version, value in zip(
            columns.where["row"].tolist(), fields["model"], fields["version"], scores, strict=True
        ):
            outcomes[row - 1] = ("score", (f"{model}@{version}", value))
        for reject in scored.rejects():
            outcomes[reject["row"] - 1] = ("error", reject["error"])
    return [outcomes[i] for i in range(len(outcomes))]


def assert_same(
    stream: list[tuple[str, Any]], table: list[tuple[str, Any]], rows: list[dict[str, Any]], events: bool = True
) -> None:
    assert len(stream) == len(table)
    for outcome in {b[1] if b[0] == "error" else "score" for b in table} if events else ():
        event(outcome)  # shown by --hypothesis-show-statistics: every reason is exercised
    for i, (a, b) in enumerate(zip(stream, table, strict=True)):
        assert a[0] == b[0], (i, rows[i], a, b)
        if a[0] == "error":
            assert a[1] == b[1], (i, rows[i], a, b)
        else:
            assert a[1][0] == b[1][0], (i, rows[i], a, b)
            assert math.isclose(a[1][1], b[1][1], rel_tol=1e-6, abs_tol=1e-6), (i, rows[i], a, b)


number = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
    st.integers(0, 23).map(float),
)
csv_cell = st.one_of(
    number,
    number,
    number,
    st.just(None),
    st.just(Nan),
    st.just(Inf),
    st.just(1e39),  # beyond float32
    st.sampled_from(["abc", "night", "day", "12x", " "]),
)
model_cell = st.sampled_from([None, None, "fraud", "lax", "lax@1", "fraud@2", "nope", ""])


@st.composite
def csv_tables(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]]]:
    columns = list(FEATURES)
    if draw(st.booleans()):
        columns.remove(draw(st.sampled_from(FEATURES)))  # a missing column
    columns = draw(st.permutations(columns))
    extra = draw(st.sets(st.sampled_from(["id", "model", "note"])))
    columns = [*sorted(extra), *columns]
    n = draw(st.integers(1, 30))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        clean = draw(st.booleans())  # half the rows are plain numbers: scores, not only rejects
        for name in columns:
            if name == "id":
                row[name] = draw(st.one_of(st.just(None), st.just(f"id-{i}")))
            elif name == "model":
                row[name] = draw(model_cell)
            elif name == "note":
                row[name] = draw(st.sampled_from(["x", "", None, "1e999"]))
            else:
                row[name] = draw(number if clean else csv_cell)
        rows.append(row)
    return columns, rows


def _as_request(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row as the request it means: text that is a number is that number; empty is null; ``note`` is
    not a feature of any card, so not part of the request; a missing id is the 1-based row number."""
    out: dict[str, Any] = {}
    for name, cell in row.items():
        if name == "note":
            continue
        if isinstance(cell, str) and name not in ("id", "model"):
            with contextlib.suppress(ValueError):
                cell = float(cell) if cell.strip() == cell and cell else cell
        out[name] = cell
    return out


@settings(max_examples=60)
@given(table=csv_tables(), size=st.sampled_from([4, 7, 8192]))
def test_csv_rows_are_scored_and_rejected_as_the_stream_would(
    models: tuple[Catalog, OnnxScorer], tmp_path_factory: pytest.TempPathFactory, table: Any, size: int
) -> None:
    catalog, scorer = models
    columns, rows = table
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    lines = [",".join(columns)] + [",".join(_csv_cell(row[name]) for name in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    requests = []
    for number, row in enumerate(rows, 1):
        request = _as_request(row)
        if request.get("id") is None:
            request["id"] = str(number)
        requests.append(request)
    assert_same(stream_outcomes(requests, catalog, scorer), table_outcomes(path, "csv", catalog, scorer, size), rows)


parquet_float = st.one_of(number, number, st.just(None), st.just(Nan), st.just(Inf), st.just(1e39))


@st.composite
def parquet_tables(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Typed columns: each feature a float, int, string or bool column."""
    n = draw(st.integers(1, 25))
    types: dict[str, Any] = {}
    for name in draw(st.permutations(FEATURES)):
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing column
        types[name] = draw(st.sampled_from(["float"] * 6 + ["int", "string", "bool"]))
    if draw(st.booleans()):
        types["model"] = "model"
    if draw(st.booleans()):
        types["id"] = "id"
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        clean = draw(st.booleans())
        for name, kind in types.items():
            if kind == "float":
                row[name] = draw(number if clean else parquet_float)
            elif kind == "int":
                row[name] = draw(st.one_of(st.integers(-(10**6), 10**6), st.just(None)))
            elif kind == "string":
                row[name] = draw(st.sampled_from(["night", "day", "abc", "3.5", None]))
            elif kind == "bool":
                row[name] = draw(st.one_of(st.booleans(), st.just(None)))
            elif kind == "model":
                row[name] = draw(model_cell)
            else:
                row[name] = draw(st.one_of(st.just(None), st.just(f"p-{i}")))
        rows.append(row)
    return types, rows


def _arrow(kind: str, cells: list[Any]) -> pa.Array:
    if kind == "float":
        values = [None if c is None else (math.nan if c is Nan else (math.inf if c is Inf else c)) for c in cells]
        return pa.array(values, pa.float64())
    if kind == "int":
        return pa.array(cells, pa.int64())
    if kind == "bool":
        return pa.array(cells, pa.bool_())
    return pa.array(cells, pa.string())


@settings(max_examples=60)
@given(table=parquet_tables(), size=st.sampled_from([3, 8192]))
def test_parquet_rows_are_scored_and_rejected_as_the_stream_would(
    models: tuple[Catalog, OnnxScorer], tmp_path_factory: pytest.TempPathFactory, table: Any, size: int
) -> None:
    catalog, scorer = models
    types, rows = table
    path = tmp_path_factory.mktemp("parquet") / "in.parquet"
    arrays = {name: _arrow(kind, [row[name] for row in rows]) for name, kind in types.items()}
    pq.write_table(pa.table(arrays) if arrays else pa.table({"x": [None] * len(rows)}), path)
    requests = []
    for number, row in enumerate(rows, 1):
        request = dict(row)
        if request.get("id") is None:
            request["id"] = str(number)
        requests.append(request)  # a Parquet string stays a string ("3.5" is text: Parquet has types)
    assert_same(
        stream_outcomes(requests, catalog, scorer), table_outcomes(path, "parquet", catalog, scorer, size), rows
    )


def test_a_clean_table_scores_exactly_like_onnxruntime_on_the_model_file(
    models: tuple[Catalog, OnnxScorer], tmp_path: Path
) -> None:
    import onnxruntime as ort

    catalog, scorer = models
    x = synthetic.transactions(5000, seed=77)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({name: x[:, i] for i, name in enumerate(FEATURES)}), path)
    outcomes = table_outcomes(path, "parquet", catalog, scorer, 1024)
    session = ort.InferenceSession(str(REPO / "models/fraud/1/model.onnx"), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"float_input": x.astype(np.float32)})
    np.testing.assert_allclose([o[1][1] for o in outcomes], probabilities[:, 1], rtol=1e-6, atol=1e-6)


def test_tabular_columns_of_requests_are_the_fields_of_the_worker_predictions(
    models: tuple[Catalog, OnnxScorer], tmp_path: Path
) -> None:
    """JSONL to CSV/Parquet: the columns are what the worker's prediction bodies say, row by row, every table
    field of the envelope (two models interleaved, dead letters between, and OIP requests, which give one
    output row per scored row)."""
    from streamer.batch.files import read_jsonl
    from streamer.batch.scored import ScoredLines

    catalog, scorer = models
    x = synthetic.transactions(40, seed=78)
    lines = []
    for i, row in enumerate(x):
        request: dict[str, Any] = {"id": f"j-{i}", "features": synthetic.features_of(row)}
        request["model"] = ["fraud", "lax", "lax@1", None, "nope"][i % 5]
        lines.append(json.dumps({k: v for k, v in request.items() if v is not None}))
    oip = {
        "id": "oip",
        "inputs": [{"name": "float_input", "shape": [3, 6], "datatype": "FP64", "data": x[:3].tolist()}],
    }
    for with_oip in (False, True):
        path = tmp_path / f"in-{with_oip}.jsonl"
        path.write_text("\n".join([*lines[:20], *([json.dumps(oip)] if with_oip else []), *lines[20:]]) + "\n")
        (chunk,) = list(read_jsonl(path, 8192, None))
        scored = ChunkScorer(catalog, scorer.infer)(chunk)
        assert isinstance(scored, ScoredLines)
        columns = scored.columns()
        expected = []
        for row, body in enumerate(scored.scored.bodies):
            if body is None:
                continue
            p = json.loads(body + b"}")
            many = isinstance(p["score"], list)
            n = len(p["score"]) if many else 1
            per_row = {name: [value] if not many else value for name, value in p.items() if name in ("score", "label")}
            outputs = [{k: v[i] if many else v for k, v in p["outputs"].items()} for i in range(n)]
            expected += [
                (p["id"], p["model"], p["version"], per_row["score"][i], per_row["label"][i], outputs[i], row + 1)
                for i in range(n)
            ]
        fields = columns.fields
        assert fields["decision"] is None and fields["reasons"] is None  # no rules: null columns
        got = list(
            zip(
                fields["id"],
                fields["model"],
                fields["version"],
                np.asarray(fields["score"]).tolist(),
                [int(v) for v in fields["label"]],
                [json.loads(text) for text in fields["outputs"]],
                columns.where["line"].tolist(),
                strict=True,
            )
        )
        assert got == expected
        assert len(got) == 32 + (3 if with_oip else 0)


def test_a_canary_split_sends_each_row_where_the_stream_sends_its_request(tmp_path: Path) -> None:
    """A row has no Kafka key: the split assigns it by its id, as the worker does a request without a key."""
    from streamer.core.routing import Serving

    root = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud", root / "fraud")
    shutil.copytree(REPO / "models" / "fraud" / "1", root / "fraud" / "2")
    card = (root / "fraud" / "2" / "card.toml").read_text().replace("version = 1", "version = 2")
    (root / "fraud" / "2" / "card.toml").write_text(card)
    scan = model_repository.scan(root)
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    catalog = Catalog(cards, serving={"fraud": Serving(pin=1, canary=((2, 0.5),))})
    scorer = OnnxScorer(scan.loaded)
    x = synthetic.transactions(400, seed=79)
    ids = [None if i % 4 == 0 else f"c-{i}" for i in range(len(x))]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids, **{name: x[:, i] for i, name in enumerate(FEATURES)}}), path)
    rows = [{"id": ids[i] or str(i + 1), **synthetic.features_of(x[i])} for i in range(len(x))]
    stream = stream_outcomes(rows, catalog, scorer)
    table = table_outcomes(path, "parquet", catalog, scorer, 128)
    assert_same(stream, table, rows, events=False)
    versions = {outcome[1][0] for outcome in table}
    assert versions == {"fraud@1", "fraud@2"}  # both sides of the split are exercised
