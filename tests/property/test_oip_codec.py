"""The Open Inference Protocol v2 (``oip.codec``, ``oip.responses``, ``oip.routes``): requests and responses
round-trip, predictions become response tensors, and routes resolve -- pure functions, no server
(``tests/integration/test_oip_codec_http.py`` sends arbitrary bodies through a real one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.core import outputs as wire
from streamer.core.types import Tensor
from streamer.oip import codec as oip
from streamer.oip import responses, routes
from tests import oip_wire

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def tensors(draw: Any) -> Tensor:
    rank = draw(st.integers(1, 2))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=rank, max_size=rank)))
    data = np.asarray(draw(st.lists(finite, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    return Tensor(draw(names), shape, data.astype(np.float64).reshape(-1))


parameters = st.dictionaries(
    names.filter(lambda n: n != "key"), st.one_of(st.text(max_size=8), st.integers(-(2**53), 2**53), st.booleans())
)


@given(
    st.lists(tensors(), min_size=1, max_size=4),
    st.none() | st.text(max_size=16),
    parameters,
    st.none() | st.lists(names, min_size=1, max_size=3).map(tuple),
)
def test_requests_round_trip(inputs: list[Tensor], request_id: str | None, params: dict, outputs: Any) -> None:
    request = oip_wire.InferRequest(tuple(inputs), request_id, params, outputs)
    back = oip_wire.decode_infer_request(oip_wire.encode_infer_request(request))
    assert (back.id, back.parameters, back.outputs) == (request_id, params, outputs)
    assert [(t.name, t.shape) for t in back.inputs] == [(t.name, t.shape) for t in inputs]
    for got, sent in zip(back.inputs, inputs, strict=True):
        assert got.data.tobytes() == sent.data.tobytes()  # bit for bit, -0.0 included


def _values(datatype: str, count: int) -> st.SearchStrategy[list[Any]]:
    element: st.SearchStrategy[Any] = {
        "FP64": finite,
        "FP32": st.floats(width=32, allow_nan=False, allow_infinity=False),
        "INT64": st.integers(-(2**63), 2**63 - 1),
        "BOOL": st.booleans(),
        "BYTES": st.text(max_size=10),
    }[datatype]
    return st.lists(element, min_size=count, max_size=count)


@st.composite
def output_tensors(draw: Any) -> responses.OutputTensor:
    datatype = draw(st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES"]))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=2)))
    return responses.OutputTensor(draw(names), datatype, shape, draw(_values(datatype, int(np.prod(shape)))))


@given(
    names,
    st.text(max_size=5),
    st.lists(output_tensors(), max_size=5).map(tuple),
    st.none() | st.text(max_size=16),
    parameters,
)
def test_responses_round_trip(model: str, version: str, outputs: Any, response_id: Any, params: dict) -> None:
    response = responses.InferResponse(model, version, outputs, response_id, params)
    back = oip_wire.decode_infer_response(responses.encode_infer_response(response))
    assert back == response
    for tensor in back.outputs:
        assert oip_wire.tensor_array(tensor).shape == tensor.shape


def test_a_prediction_becomes_every_output_plus_score_and_label() -> None:
    prediction = wire.Prediction(
        id="r1",
        model="fraud",
        version="1",
        score=[0.25, 0.75],
        label=[0, 1],
        outputs={"label": [0, 1], "probabilities": [[0.75, 0.25], [0.25, 0.75]]},
        source=wire.Source("oip", 0, 0),
    )
    response = responses.response_of(prediction, "r1", None, {"label": "INT64", "probabilities": "FP32"})
    assert [(t.name, t.datatype, t.shape) for t in response.outputs] == [
        ("outputs.label", "INT64", (2,)),
        ("probabilities", "FP32", (2, 2)),
        ("score", "FP64", (2,)),
        ("label", "INT64", (2,)),
    ]
    assert response.parameters == {"id": "r1", "model": "fraud", "version": "1"}
    assert responses.response_of(prediction, None, ["score"]).outputs[0].data == [0.25, 0.75]
    with pytest.raises(oip.OipError) as raised:
        responses.response_of(prediction, None, ["nope"])
    assert raised.value.status == 400 and raised.value.message.startswith("schema: no output named 'nope'")


def test_a_ruled_prediction_answers_decision_and_reasons_as_bytes_per_row() -> None:
    prediction = wire.Prediction(
        id="r1",
        model="fraud-graph",
        version="1",
        score=[0.25, 0.75],
        label=None,
        outputs={"phases": [0.25, 0.75]},
        decision=["allow", "deny"],
        reasons=[[], ["score at or above 0.5"]],
        source=wire.Source("oip", 0, 0),
    )
    response = responses.response_of(prediction, None)
    assert [(t.name, t.datatype, t.shape) for t in response.outputs] == [
        ("phases", "FP64", (2,)),
        ("score", "FP64", (2,)),
        ("decision", "BYTES", (2,)),
        ("reasons", "BYTES", (2,)),
    ]
    assert response.output("reasons").data == ["[]", '["score at or above 0.5"]']


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v2/health/live", routes.Route("live")),
        ("GET", "/v2/health/ready/", routes.Route("ready")),
        ("GET", "/v2", routes.Route("server")),
        ("GET", "/v2/models/fraud", routes.Route("model", "fraud")),
        ("GET", "/v2/models/fraud/versions/2", routes.Route("model", "fraud", 2)),
        ("GET", "/v2/models/fraud/versions/2/ready", routes.Route("model_ready", "fraud", 2)),
        ("POST", "/v2/models/fraud/infer?x=1", routes.Route("infer", "fraud")),
        ("POST", "/v2/models/fraud/versions/1/infer", routes.Route("infer", "fraud", 1)),
    ],
)
def test_routes(method: str, path: str, expected: routes.Route) -> None:
    assert routes.route(method, path) == expected


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/models/fraud", 404),
        ("GET", "/v2/models/fraud/infer", 405),
        ("POST", "/v2/models/fraud", 405),
        ("GET", "/v2/models/fraud/versions/x", 404),
        ("GET", "/v2/models/fraud/explain", 404),
    ],
)
def test_bad_routes(method: str, path: str, status: int) -> None:
    with pytest.raises(oip.OipError) as raised:
        routes.route(method, path)
    assert raised.value.status == status
