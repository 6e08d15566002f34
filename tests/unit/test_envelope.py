"""The envelopes of the contract: requests (``core.requests``), feedback (``core.labels``), dead-letter headers
(``core.headers``) and the prediction's declaration (``core.outputs``)."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from streamer.core import headers, labels, outputs, requests
from streamer.core.errors import DEAD_LETTER_REASONS, DecodeError
from streamer.core.types import Label, SourceRef
from tests.wire import decode_request

OIP = {
    "id": "o-1",
    "inputs": [{"name": "float_input", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}],
}


def test_a_json_request_decodes_to_one_row_of_features() -> None:
    body = decode_request(b'{"id": "r-42", "model": "fraud@2", "features": {"amount": 125, "hour": 3}}')
    assert (body.id, body.model, body.features) == ("r-42", "fraud@2", {"amount": 125.0, "hour": 3.0})
    assert not body.is_oip


def test_id_and_model_are_optional_and_unknown_fields_ignored() -> None:
    body = decode_request(b'{"features": {"a": 1}, "trace": {"x": 1}}')
    assert (body.id, body.model) == (None, None)


def test_an_oip_request_decodes_nested_or_flat_data_row_major() -> None:
    nested = decode_request(json.dumps(OIP).encode())
    flat = dict(OIP, inputs=[dict(OIP["inputs"][0], data=[1, 2, 3, 4, 5, 6])])
    assert nested.is_oip and nested.tensors is not None
    assert nested.tensors == decode_request(json.dumps(flat).encode()).tensors
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
        decode_request(raw)
    assert raised.value.reason == reason
    assert raised.value.detail


def test_size_limits_are_checked_before_parsing() -> None:
    with pytest.raises(DecodeError) as raised:
        decode_request(b'{"features": {}}' + b" " * 100, max_bytes=50)
    assert raised.value.reason == "too-large"
    rows = {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]}
    with pytest.raises(DecodeError) as raised:
        decode_request(json.dumps(rows).encode(), max_rows=2)
    assert raised.value.reason == "too-large"
    with pytest.raises(DecodeError) as raised:
        decode_request(None)
    assert raised.value.reason == "schema"


def test_a_batch_keeps_good_and_bad_apart_with_positions() -> None:
    decoded = requests.decode_requests(
        [b'{"features": {"a": 1}}', b"nope", json.dumps(OIP).encode(), None, b'{"features": {"a": 2}}']
    )
    assert decoded.rows == [0, 2, 4]
    assert [w.features for w in decoded.wires] == [{"a": 1.0}, msgspec.UNSET, {"a": 2.0}]
    assert list(decoded.tensors) == [1] and decoded.tensors[1][0].shape == (2, 3)
    assert {row: e.reason for row, e in decoded.errors.items()} == {1: "invalid-json", 3: "schema"}


# JSON text is UTF-8 (RFC 8259): invalid bytes anywhere make the value invalid-json, even where the model never
# reads -- an ignored string, the id, a feature name -- and whether or not the rest of the batch is ASCII.
INVALID_UTF8 = [
    b'{"id": "x", "note": "\xff\xfe", "features": {"a": 1}}',  # inside a string the model never reads
    b'{"id": "\xc3\x28", "features": {"a": 1}}',  # inside the id
    b'{"features": {"a\xff": 1, "a": 2}}',  # inside a feature name
    b'{"features": {"a": 1}, "\xed\xa0\x80": 0}',  # an encoded surrogate as a key
]


@pytest.mark.parametrize("raw", INVALID_UTF8)
def test_invalid_utf8_anywhere_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    with pytest.raises(DecodeError) as raised:
        decode_request(raw)
    assert raised.value.reason == "invalid-json"
    decoded = requests.decode_requests([b'{"features": {"a": 1}}', raw, '{"features": {"é": 1}}'.encode()])
    assert decoded.rows == [0, 2] and decoded.errors[1].reason == "invalid-json"


def test_valid_utf8_beyond_ascii_decodes() -> None:
    body = decode_request('{"id": "café ☕", "features": {"prix": 1}}'.encode())
    assert body.id == "café ☕"


def test_invalid_utf8_feedback_is_invalid_json() -> None:
    with pytest.raises(DecodeError) as raised:
        labels.decode_label(b'{"id": "\xff", "label": 1}')
    assert raised.value.reason == "invalid-json"


def test_a_dead_letter_over_the_limit_is_cut_with_the_original_size_and_sha256() -> None:
    import hashlib

    value = b"x" * 10_000
    own = [("streamer-error", b"too-large")]
    same, same_headers = headers.fit_dead_letter(b"k", value, own, 20_000)
    assert same is value and same_headers == own
    cut, cut_headers = headers.fit_dead_letter(b"k", value, own, 2_000)
    assert value.startswith(cut) and 0 < len(cut) < 2_000
    assert headers.record_size(b"k", cut, cut_headers) <= 2_000
    extra = dict(cut_headers)
    assert extra["streamer-original-size"] == b"10000"
    assert extra["streamer-original-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert cut_headers[0] == own[0]


def test_prediction_round_trip_and_shape() -> None:
    prediction = outputs.Prediction(
        id="r-42",
        model="fraud",
        version="1",
        score=0.93,
        label=1,
        outputs={"probabilities": [0.07, 0.93], "label": 1},
        source=outputs.Source("requests", 3, 1042),
        latency_ms=4.1,
    )
    raw = msgspec.json.encode(prediction)
    assert raw.startswith(b'{"id":"r-42","model":"fraud","version":"1","score":0.93,"label":1,"outputs":')
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
    assert outputs.decode(raw) == prediction
    with pytest.raises(msgspec.ValidationError):  # the declaration validates what it reads
        outputs.decode(raw.replace(b'"version":"1"', b'"version":"01"'))


def test_labels_decode() -> None:
    assert labels.decode_label(b'{"id": "r-1", "label": 1}') == Label("r-1", 1.0)
    assert labels.decode_label(b'{"id": "r-2", "label": 0, "model": "fraud"}') == Label("r-2", 0.0, "fraud")
    with pytest.raises(DecodeError):
        labels.decode_label(b'{"id": "r-1"}')


def test_dead_letter_headers_carry_reason_detail_and_source() -> None:
    found = dict(headers.dead_letter_headers(DecodeError("schema", "feature 'a' is missing"), SourceRef("in", 5, 77)))
    assert found == {
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
