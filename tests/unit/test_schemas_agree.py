"""The JSON Schemas in schemas/ and the runtime decoder accept and refuse the same corpus.

Two documented exceptions, where the decoder checks what JSON Schema cannot express: an OIP tensor whose data
count does not match its shape, and a number beyond float64 (``1e999``, which JSON Schema sees as a number).
Those are listed as ``decoder_only`` and must be refused by the decoder while the schema accepts them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from streamer.core import envelope
from streamer.core.errors import DecodeError
from streamer.core.types import SourceRef

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
    decode = {"request": envelope.decode_request, "feedback": envelope.decode_label}[name]
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


def test_predictions_the_encoder_writes_match_the_schema() -> None:
    from streamer.core.types import Prediction

    validator = _schema("prediction")
    for score, label in ((0.5, 1), ([0.1, 0.9], [0, 1]), (3.2, None)):
        prediction = Prediction("r", "m", "2", score, label, {"x": 1}, SourceRef("t", 0, 9), 1.5)
        validator.validate(json.loads(envelope.encode_prediction(prediction)))
    assert not validator.is_valid({"id": "r"})


def test_dead_letter_headers_match_the_schema() -> None:
    validator = _schema("dead-letter")
    headers = envelope.dead_letter_headers(DecodeError("too-large", "big"), SourceRef("requests", 2, 10))
    validator.validate({k: v.decode() for k, v in headers})
    assert not validator.is_valid({"streamer-error": "made-up"})
