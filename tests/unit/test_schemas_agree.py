"""The JSON Schemas in schemas/ agree with the code: the request and feedback schemas with the decoders (one
corpus through both), the prediction and dead-letter schemas with their declarations (generated from them by
``tests/wire_schemas.py``), and what the encoders write validates.

Two documented exceptions, where the decoder checks what JSON Schema cannot express: an OIP tensor whose data
count does not match its shape, and a number beyond float64 (``1e999``, which JSON Schema sees as a number).
Those are listed as ``decoder_only`` and must be refused by the decoder while the schema accepts them. The
bytes a running worker writes are validated by ``tests/e2e/test_wire_schemas.py``, on both engines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import numpy as np
import pytest

from streamer.core import headers, labels, outputs
from streamer.core.errors import REASONS, DecodeError
from streamer.core.graph.scoring_graph import GraphResult
from streamer.core.types import SourceRef
from tests import wire_schemas
from tests.wire import decode_request

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CORPUS = json.loads((Path(__file__).resolve().parents[1] / "corpus" / "envelopes.json").read_text())


def _schema(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_accepts(name: str, raw: str) -> bool:
    try:
        document = json.loads(raw)
    except ValueError:
        return False
    return _schema(name).is_valid(document)


def _decoder_accepts(name: str, raw: str) -> bool:
    decode = {"request": decode_request, "feedback": labels.decode_label}[name]
    try:
        decode(raw.encode())
    except DecodeError:
        return False
    return True


CASES = [(kind, case) for kind in ("request", "feedback") for case in CORPUS[kind]]


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}-{c['name']}" for k, c in CASES])
def test_schema_and_decoder_agree(kind: str, case: dict[str, Any]) -> None:
    raw = case["raw"] if isinstance(case["raw"], str) else json.dumps(case["raw"])
    decoder = _decoder_accepts(kind, raw)
    schema = _schema_accepts(kind, raw)
    if case.get("decoder_only"):
        assert (schema, decoder) == (True, False)
    else:
        assert schema == decoder == case["valid"]


def test_the_corpus_has_both_kinds_of_example() -> None:
    for kind in ("request", "feedback"):
        assert {c["valid"] for c in CORPUS[kind]} == {True, False}


@pytest.mark.parametrize("name", sorted(wire_schemas.GENERATED))
def test_the_output_schemas_are_generated_from_their_declarations(name: str) -> None:
    on_disk = (SCHEMAS / f"{name}.schema.json").read_text()
    generated = wire_schemas.text(wire_schemas.GENERATED[name]())
    assert on_disk == generated, f"schemas/{name}.schema.json is stale: run .venv/bin/python -m tests.wire_schemas"
    jsonschema.Draft202012Validator.check_schema(json.loads(on_disk))


def _result(rows: int, rules: bool) -> GraphResult:
    score = np.linspace(0.1, 0.9, rows)
    outputs_ = {"probabilities": np.stack([1 - score, score], axis=1), "label": (score > 0.5).astype(np.int64)}
    decision = ["deny" if s > 0.5 else "allow" for s in score] if rules else None
    reasons = [["score at or above 0.5"] if s > 0.5 else [] for s in score] if rules else None
    return GraphResult(score, outputs_["label"], outputs_, decision, reasons)


@pytest.mark.parametrize("rules", [False, True])
def test_predictions_the_encoders_write_match_the_schema(rules: bool) -> None:
    validator = _schema("prediction")
    result = _result(3, rules)
    columns = outputs.row_columns(result)
    single = outputs.encode_single_predictions(["a", "b", "c"], "m", "2", columns, "t", 0, [7, 8, 9])
    fields = outputs.request_fields(columns, 0, 3, arrays=True)
    oip = outputs.Prediction(id="o", model="m", version="2", source=outputs.Source("t", 0, 10), **fields)
    values, _ = outputs.finish_predictions([*single, *outputs.open_bodies([oip])], [0, 0, 0, 0], 5.0)
    for value in values:
        validator.validate(json.loads(value))
        assert ("decision" in json.loads(value)) == rules
    assert not validator.is_valid({"id": "r"})
    assert not validator.is_valid(json.loads(values[0].replace(b'"version":"2"', b'"version":"02"')))


def test_dead_letter_headers_match_the_schema() -> None:
    validator = _schema("dead-letter")
    for reason in REASONS:
        found = headers.dead_letter_headers(DecodeError(reason, "why"), SourceRef("requests", 2, 10))
        validator.validate({k: v.decode() for k, v in found})
    assert not validator.is_valid({"streamer-error": "made-up"})


def test_what_the_schema_accepts_the_declaration_decodes() -> None:
    """The generated schema and the struct's own validation are one: a value of the wrong type fails both."""
    validator = _schema("prediction")
    good = {"id": "r", "model": "m", "version": "1", "score": 0.5, "label": None, "outputs": {}}
    good["source"] = {"topic": "t", "partition": 0, "offset": 1}
    bad = {**good, "score": "high"}
    assert validator.is_valid({**good, "latency_ms": 1.0}) and outputs.decode(msgspec.json.encode(good))
    assert not validator.is_valid({**bad, "latency_ms": 1.0})
    with pytest.raises(msgspec.ValidationError):
        outputs.decode(msgspec.json.encode(bad))
