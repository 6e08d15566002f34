"""No body makes the Open Inference Protocol v2 server answer 500: arbitrary bytes and arbitrary JSON get a
protocol error (400) or a prediction, and binary tensor data is read like JSON.

The bodies go through a real HTTP server in this process (``oip.http`` over the shipped model, scored by the
stream's path), started once for the module; the codec's pure properties are in
``tests/property/test_oip_codec.py``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer import config
from streamer.core.types import Tensor
from streamer.serve import oip_server, standalone
from tests import oip_wire
from tests.conftest import REPO

finite = st.floats(allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    settings_ = config.load(None, environ={"STREAMER_MODELS_DIR": str(REPO / "models")})
    built = standalone(settings_)
    running = oip_server(settings_, built.serving, built.score, built.metrics, lambda: True, port=0)
    running.start()
    yield running
    running.stop()


def post(server: Any, body: bytes, path: str = "/v2/models/fraud/infer") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


REASONS = ("invalid-json", "schema", "non-finite", "too-large", "unknown-model")

no_deadline = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@no_deadline
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_400_never_a_500(server: Any, body: bytes) -> None:
    status, answer = post(server, body)
    assert status == 400, answer
    assert answer["error"].split(":", 1)[0] in REASONS  # the stream's dead-letter reason words


json_values = st.recursive(
    st.none() | st.booleans() | finite | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
tensor_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["float_input", "amount", "x"]) | json_values,
        "shape": st.lists(st.integers(-2, 8), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL"]) | json_values,
        "data": st.lists(finite | st.integers() | st.lists(finite, max_size=7), max_size=12) | json_values,
        "parameters": json_values,
    },
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.lists(tensor_like, max_size=3) | json_values,
        "parameters": st.dictionaries(st.sampled_from(["key", "x"]), json_values) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["score", "y"]) | json_values})),
    },
)


@no_deadline
@given(request_like)
def test_request_shaped_json_gets_a_prediction_or_a_400(server: Any, body: dict) -> None:
    status, answer = post(server, msgspec.json.encode(body))
    assert status in (200, 400), answer
    if status == 400:
        assert answer["error"].split(":", 1)[0] in REASONS


def test_binary_tensor_data_is_read_like_json(server: Any) -> None:
    rows = np.arange(12, dtype=np.float32).reshape(2, 6)
    head = msgspec.json.encode(
        {
            "inputs": [
                {"name": "float_input", "shape": [2, 6], "datatype": "FP32", "parameters": {"binary_data_size": 48}}
            ]
        }
    )
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(
        "POST", "/v2/models/fraud/infer", head + rows.tobytes(), {"Inference-Header-Content-Length": str(len(head))}
    )
    binary = oip_wire.decode_infer_response(connection.getresponse().read())
    plain = oip_wire.InferRequest((Tensor("float_input", (2, 6), rows.astype(np.float64).reshape(-1)),))
    status, answer = post(server, oip_wire.encode_infer_request(plain))
    assert status == 200
    assert binary.output("score").data == answer["outputs"][2]["data"]
