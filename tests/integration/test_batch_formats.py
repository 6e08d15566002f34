"""`streamer batch` with JSONL, CSV and Parquet in and out, as a user runs it: scores equal to the stream's,
rejects with the stream's reasons and the original row, Parquet round trips, the summary line."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from streamer import synthetic
from streamer.adapters import model_repository
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records
from tests.conftest import REPO

FEATURES = list(synthetic.FEATURES)
ROWS = synthetic.transactions(300, seed=61)


def run_batch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | {
        "STREAMER_MODELS_DIR": str(REPO / "models")
    }
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", "batch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def model_scores(rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(REPO / "models/fraud/1/model.onnx"), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"float_input": rows.astype(np.float32)})
    return probabilities[:, 1]


def stream_predictions(values: list[bytes]) -> list[dict[str, Any] | None]:
    """What the worker's own scoring function makes of these request values (None: a dead letter)."""
    scan = model_repository.scan(REPO / "models")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    scored = score_records(
        Records.of("t", 0, list(range(len(values))), values), Catalog(cards), OnnxScorer(scan.loaded).infer
    )
    return [None if body is None else json.loads(body + b"}") for body in scored.bodies]


def ids() -> list[str | None]:
    return [None if i % 3 == 0 else f"tx-{i}" for i in range(len(ROWS))]  # every third row without an id


def write_input(path: Path, fmt: str) -> None:
    columns: dict[str, Any] = {"id": ids(), **{name: ROWS[:, i] for i, name in enumerate(FEATURES)}}
    if fmt == "jsonl":
        lines = []
        for i, row in enumerate(ROWS):
            request: dict[str, Any] = {"features": synthetic.features_of(row)}
            if columns["id"][i] is not None:
                request["id"] = columns["id"][i]
            lines.append(json.dumps(request))
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "csv":
        pcsv.write_csv(pa.table(columns), path)
    else:
        pq.write_table(pa.table(columns), path)


def read_output(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if fmt == "csv":
        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"id": pa.string()})).to_pylist()
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("out_fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("in_fmt", ["jsonl", "csv", "parquet"])
def test_every_format_gives_the_streams_scores_in_input_order(tmp_path: Path, in_fmt: str, out_fmt: str) -> None:
    write_input(tmp_path / f"in.{in_fmt}", in_fmt)
    result = run_batch(tmp_path, f"in.{in_fmt}", "--output", f"out.{out_fmt}", "--batch-size", "128")
    assert result.returncode == 0, result.stderr
    assert "300 rows: 300 predictions, 0 dead letters" in result.stderr
    assert (tmp_path / f"out.{out_fmt}.rejects.jsonl").read_text() == ""
    predictions = read_output(tmp_path / f"out.{out_fmt}", out_fmt)
    # the model file itself, and the worker's scoring function on the same rows as JSON requests
    expected = model_scores(ROWS)
    stream = stream_predictions([json.dumps({"features": synthetic.features_of(r)}).encode() for r in ROWS])
    scores = [p["score"] for p in predictions]
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores, [s["score"] for s in stream], rtol=1e-6, atol=1e-6)  # type: ignore[index]
    assert [p["label"] for p in predictions] == [s["label"] for s in stream]  # type: ignore[index]
    assert {(p["model"], str(p["version"])) for p in predictions} == {("fraud", "1")}
    # ids: given ones kept; a missing one is the row number (CSV, Parquet) or the worker's default (JSONL)
    given = ids()
    if in_fmt == "jsonl":
        defaults = [f"file:in.jsonl:0:{i}" for i in range(len(ROWS))]
    else:
        defaults = [str(i + 1) for i in range(len(ROWS))]
    assert [p["id"] for p in predictions] == [g if g is not None else d for g, d in zip(given, defaults, strict=True)]
    where = "line" if in_fmt == "jsonl" else "row"
    if out_fmt == "jsonl":
        assert [p["source"]["offset"] for p in predictions] == list(range(len(ROWS)))
        assert "latency_ms" not in predictions[0]
    else:
        assert [p[where] for p in predictions] == list(range(1, len(ROWS) + 1))


HOSTILE_CSV = """id,amount,hour,merchant_risk,distance_km,velocity_1h,account_age_days,note
ok-1,12.5,3,0.2,4.5,1,100,fine
nan-1,nan,3,0.2,4.5,1,100,NaN is a missing value
empty-1,12.5,,0.2,4.5,1,100,an empty cell is null
text-1,12.5,3,high,4.5,1,100,text in a numeric feature
huge-1,1e999,3,0.2,4.5,1,100,beyond float64
f32-1,1e39,3,0.2,4.5,1,100,beyond float32
,12.5,3,0.2,4.5,1,100,no id
"q,1",12.5,3,0.2,4.5,1,100,"quoted, with a comma"
ok-2,1e3,23,0.9,100,5,1,fine
"""


def test_hostile_csv_rows_are_rejected_with_the_streams_reasons_and_their_original_text(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(HOSTILE_CSV)
    result = run_batch(tmp_path, "in.csv", "-o", "out.csv", "--rejects", "bad.jsonl")
    assert result.returncode == 0, result.stderr
    assert "9 rows: 4 predictions, 5 dead letters (non-finite 4, schema 1)" in result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [(r["row"], r["error"]) for r in rejects] == [
        (2, "non-finite"),
        (3, "non-finite"),
        (4, "schema"),
        (5, "non-finite"),
        (6, "non-finite"),
    ]
    assert "is null" in rejects[0]["detail"] and "'hour'" in rejects[1]["detail"]
    assert "not categorical" in rejects[2]["detail"]
    lines = HOSTILE_CSV.splitlines()
    assert [r["original"] for r in rejects] == [lines[row] for row in (2, 3, 4, 5, 6)]
    # the same rows as the JSON requests they mean get the same reasons from the worker's scoring function
    values = [
        b'{"features":{"amount":null,"hour":3,"merchant_risk":0.2,"distance_km":4.5,"velocity_1h":1,"account_age_days":100}}',
        b'{"features":{"amount":12.5,"hour":null,"merchant_risk":0.2,"distance_km":4.5,"velocity_1h":1,"account_age_days":100}}',
        b'{"features":{"amount":12.5,"hour":3,"merchant_risk":"high","distance_km":4.5,"velocity_1h":1,"account_age_days":100}}',
        b'{"features":{"amount":1e999,"hour":3,"merchant_risk":0.2,"distance_km":4.5,"velocity_1h":1,"account_age_days":100}}',
        b'{"features":{"amount":1e39,"hour":3,"merchant_risk":0.2,"distance_km":4.5,"velocity_1h":1,"account_age_days":100}}',
    ]
    scan = model_repository.scan(REPO / "models")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    scored = score_records(Records.of("t", 0, list(range(5)), values), Catalog(cards), OnnxScorer(scan.loaded).infer)
    assert [scored.errors[i].reason for i in range(5)] == [r["error"] for r in rejects]
    predictions = read_output(tmp_path / "out.csv", "csv")
    assert [(p["id"], p["row"]) for p in predictions] == [("ok-1", 1), ("7", 7), ("q,1", 8), ("ok-2", 9)]
    x = np.array([[12.5, 3, 0.2, 4.5, 1, 100]] * 3 + [[1e3, 23, 0.9, 100, 5, 1]])
    np.testing.assert_allclose([p["score"] for p in predictions], model_scores(x), rtol=1e-6, atol=1e-6)


def test_a_csv_without_a_feature_column_rejects_every_row_as_schema(tmp_path: Path) -> None:
    columns = {name: ROWS[:50, i] for i, name in enumerate(FEATURES) if name != "velocity_1h"}
    pcsv.write_csv(pa.table(columns), tmp_path / "in.csv")
    result = run_batch(tmp_path, "in.csv", "-o", "out.parquet")
    assert result.returncode == 0, result.stderr
    assert "50 rows: 0 predictions, 50 dead letters (schema 50)" in result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "out.parquet.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == list(range(1, 51))
    assert {r["detail"] for r in rejects} == {"feature 'velocity_1h' is missing (model fraud@1)"}
    first = next(csv.reader(io.StringIO(rejects[0]["original"])))
    assert [float(v) for v in first] == pytest.approx([ROWS[0, i] for i in (0, 1, 2, 3, 5)])
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 0


def test_parquet_round_trip_keeps_types_ids_models_and_rows(tmp_path: Path) -> None:
    n = 1000
    x = synthetic.transactions(n, seed=62)
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),  # a number id is its decimal text
            "model": ["fraud@1" if i % 2 else None for i in range(n)],
            **{name: x[:, i].astype(np.float32) if i == 0 else x[:, i] for i, name in enumerate(FEATURES)},
            "extra": ["ignored"] * n,
        }
    )
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=300)
    result = run_batch(tmp_path, "in.parquet", "-o", "out.pq", "--batch-size", "256", "--quiet")
    assert result.returncode == 0, result.stderr
    out = pq.read_table(tmp_path / "out.pq")
    # every table field of the prediction envelope, in its order, then where the row came from
    fields = ["id", "model", "version", "score", "label", "outputs", "decision", "reasons", "enrichment"]
    assert out.schema.names == [*fields, "row"]
    assert [str(t) for t in out.schema.types] == [*["string"] * 3, "double", "int64", *["string"] * 4, "int64"]
    outputs = [json.loads(text) for text in out.column("outputs").to_pylist()]
    assert [o["probabilities"][1] for o in outputs] == pytest.approx(out.column("score").to_pylist(), abs=1e-6)
    assert [o["label"] for o in outputs] == out.column("label").to_pylist()
    assert out.column("decision").null_count == n and out.column("reasons").null_count == n  # no rules
    assert out.column("id").to_pylist() == [str(i) for i in range(n)]
    assert out.column("row").to_pylist() == list(range(1, n + 1))
    assert set(out.column("model").to_pylist()) == {"fraud"} and set(out.column("version").to_pylist()) == {"1"}
    # the float32 column reaches the model as the same float32 values
    x[:, 0] = x[:, 0].astype(np.float32)
    np.testing.assert_allclose(out.column("score").to_numpy(), model_scores(x), rtol=1e-6, atol=1e-6)
    labels = (model_scores(x) > 0.5).astype(np.int64)
    assert (out.column("label").to_numpy() == labels).mean() > 0.99  # ties at 0.5 aside


def test_hostile_jsonl_lines_get_the_worker_dead_letters_with_their_text(tmp_path: Path) -> None:
    good = json.dumps({"id": "g", "features": synthetic.features_of(ROWS[0])})
    lines = [
        good.encode(),
        b'{"features": {"amount": NaN}}',
        b"",
        b'{"features": {"amount": "12"}}',
        b"   ",
        b'{"id": 5, "features": {}}',
        b"\xff\xfe not utf-8",
        b'{"model": "fraud@9", "features": {}}',
        b"[1, 2]",
        good.replace('"g"', '"g2"').encode() + b"\r",
    ]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines))  # no final newline
    result = run_batch(tmp_path, "in.jsonl", "-o", "out.csv")
    assert result.returncode == 0, result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    values = [line.rstrip(b"\r") for line in lines if line.strip()]
    stream = stream_predictions(values)
    scan = model_repository.scan(REPO / "models")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    scored = score_records(
        Records.of("t", 0, list(range(len(values))), values), Catalog(cards), OnnxScorer(scan.loaded).infer
    )
    expected = [(e.reason, e.detail) for _, e in sorted(scored.errors.items())]
    assert [(r["error"], r["detail"]) for r in rejects] == expected
    assert [r["line"] for r in rejects] == [2, 4, 6, 7, 8, 9]
    assert rejects[0]["original"] == '{"features": {"amount": NaN}}'
    assert rejects[3]["original"] == "\ufffd\ufffd not utf-8"
    predictions = read_output(tmp_path / "out.csv", "csv")
    assert [(p["id"], p["line"]) for p in predictions] == [("g", 1), ("g2", 10)]
    assert [p["score"] for p in predictions] == pytest.approx([s["score"] for s in stream if s], abs=1e-6)


def test_a_model_column_routes_each_row(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "model,amount,hour,merchant_risk,distance_km,velocity_1h,account_age_days\n"
        "fraud,12.5,3,0.2,4.5,1,100\n"
        "fraud@1,12.5,3,0.2,4.5,1,100\n"
        "nope,12.5,3,0.2,4.5,1,100\n"
        ",12.5,3,0.2,4.5,1,100\n"
        "fraud@7,12.5,3,0.2,4.5,1,100\n"
    )
    result = run_batch(tmp_path, "in.csv", "-o", "out.jsonl")
    assert result.returncode == 0, result.stderr
    assert [p["id"] for p in read_output(tmp_path / "out.jsonl", "jsonl")] == ["1", "2", "4"]
    rejects = [json.loads(line) for line in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["error"]) for r in rejects] == [(3, "unknown-model"), (5, "unknown-model")]
    assert rejects[0]["detail"] == "no model named 'nope'"


def test_stdout_and_stderr_when_no_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "amount,hour,merchant_risk,distance_km,velocity_1h,account_age_days\n1,2,0.1,4,1,9\n,,,,,\n"
    )
    result = run_batch(tmp_path, "in.csv", "--output-format", "csv")
    assert result.returncode == 0, result.stderr
    header = '"id","model","version","score","label","outputs","decision","reasons","enrichment","row"'
    assert result.stdout.splitlines()[0] == header
    assert len(result.stdout.splitlines()) == 2
    assert '"row": 2, "error": "non-finite"' in result.stderr  # rejects on stderr
    assert "2 rows: 1 predictions, 1 dead letters (non-finite 1)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["in.txt"], "cannot tell the format from the extension"),
        (["in.csv", "--output-format", "parquet"], "Parquet output needs --output FILE"),
        (["in.csv", "--input-format", "xml"], "unknown format 'xml'"),
        ([], "give an input file or --from-topic"),
        (["missing.csv"], "missing.csv"),
    ],
)
def test_wrong_usage_is_one_line_and_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    (tmp_path / "in.csv").write_text("amount\n1\n")
    result = run_batch(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
