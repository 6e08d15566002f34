from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.core import envelope
from streamer.core.errors import DEAD_LETTER_REASONS, DecodeError
from streamer.core.types import Label, Prediction, SourceRef

OIP = {
    "id": "o-1",
    "inputs": [{"name": "float_input", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}],
}


def test_a_json_request_decodes_to_one_row_of_features() -> None:
    body = envelope.decode_request(b'{"id": "r-42", "model": "fraud@2", "features": {"amount": 125, "hour": 3}}')
    assert (body.id, body.model, body.features) == ("r-42", "fraud@2", {"amount": 125.0, "hour": 3.0})
    assert not body.is_oip


def test_id_and_model_are_optional_and_unknown_fields_ignored() -> None:
    body = envelope.decode_request(b'{"features": {"a": 1}, "trace": {"x": 1}}')
    assert (body.id, body.model) == (None, None)


def test_an_oip_request_decodes_nested_or_flat_data_row_major() -> None:
    nested = envelope.decode_request(json.dumps(OIP).encode())
    flat = dict(OIP, inputs=[dict(OIP["inputs"][0], data=[1, 2, 3, 4, 5, 6])])
    assert nested.is_oip and nested.tensors is not None
    assert nested.tensors == envelope.decode_request(json.dumps(flat).encode()).tensors
    assert nested.tensors[0].shape == (2, 3)
    np.testing.assert_array_equal(nested.tensors[0].data, [1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "invalid-json"),
        (b"\xff\xfe{}", "invalid-json"),
        (b'{"features": {"a": NaN}}', "invalid-json"),
        (b'{"features": {"a": 1}} trailing', "invalid-json"),
        (b"[1, 2]", "schema"),
        (b'"just a string"', "schema"),
        (b"{}", "schema"),
        (b'{"features": {"a": true}}', "schema"),
        (b'{"features": {"a": [1]}}', "schema"),
        (b'{"features": [1, 2]}', "schema"),
        (b'{"features": {"a": 1}, "inputs": []}', "schema"),
        (b'{"id": 42, "features": {"a": 1}}', "schema"),
        (b'{"features": {"a": 1e999}}', "non-finite"),
        (b'{"inputs": []}', "schema"),
        (b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}', "schema"),
        (b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}', "schema"),
        (b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [true]}]}', "schema"),
        (b'{"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [1]}]}', "schema"),
    ],
)
def test_bad_requests_raise_decode_error_with_the_dead_letter_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as raised:
        envelope.decode_request(raw)
    assert raised.value.reason == reason
    assert raised.value.detail


def test_size_limits_are_checked_before_parsing() -> None:
    with pytest.raises(DecodeError) as raised:
        envelope.decode_request(b'{"features": {}}' + b" " * 100, max_bytes=50)
    assert raised.value.reason == "too-large"
    rows = {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]}
    with pytest.raises(DecodeError) as raised:
        envelope.decode_request(json.dumps(rows).encode(), max_rows=2)
    assert raised.value.reason == "too-large"
    with pytest.raises(DecodeError) as raised:
        envelope.decode_request(None)
    assert raised.value.reason == "schema"


def test_a_batch_keeps_good_and_bad_apart_with_positions() -> None:
    good, bad = envelope.decode_requests([b'{"features": {"a": 1}}', b"nope", b'{"features": {"a": 2}}'])
    assert [p for p, _ in good] == [0, 2]
    assert [(p, e.reason) for p, e in bad] == [(1, "invalid-json")]


def test_prediction_round_trip_and_shape() -> None:
    prediction = Prediction(
        id="r-42",
        model="fraud",
        version="1",
        score=0.93,
        label=1,
        outputs={"probabilities": [0.07, 0.93], "label": 1},
        source=SourceRef("requests", 3, 1042),
        latency_ms=4.1,
    )
    raw = envelope.encode_prediction(prediction)
    assert json.loads(raw) == {
        "id": "r-42",
        "model": "fraud",
        "version": "1",
        "score": 0.93,
        "label": 1,
        "outputs": {"probabilities": [0.07, 0.93], "label": 1},
        "source": {"topic": "requests", "partition": 3, "offset": 1042},
        "latency_ms": 4.1,
    }
    assert envelope.decode_prediction(raw) == prediction


def test_labels_decode_and_round_trip() -> None:
    assert envelope.decode_label(b'{"id": "r-1", "label": 1}') == Label("r-1", 1.0)
    label = Label("r-2", 0.0, "fraud")
    assert envelope.decode_label(envelope.encode_label(label)) == label
    with pytest.raises(DecodeError):
        envelope.decode_label(b'{"id": "r-1"}')


def test_dead_letter_headers_carry_reason_detail_and_source() -> None:
    headers = dict(
        envelope.dead_letter_headers(DecodeError("schema", "feature 'a' is missing"), SourceRef("in", 5, 77))
    )
    assert headers == {
        "streamer-error": b"schema",
        "streamer-error-detail": b"feature 'a' is missing",
        "streamer-source-topic": b"in",
        "streamer-source-partition": b"5",
        "streamer-source-offset": b"77",
    }


def test_the_reason_set_is_the_contracts() -> None:
    assert {"invalid-json", "schema", "unknown-model", "too-large", "scoring-failed"} <= DEAD_LETTER_REASONS
    with pytest.raises(ValueError):
        DecodeError("made-up", "x")
