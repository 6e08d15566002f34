"""The client side of the Open Inference Protocol v2, as a test oracle: build an inference request body, parse
one back, parse a response. The server never encodes requests nor decodes responses, so none of this is in
``streamer/``; the tests use it to drive ``streamer serve`` and to check what it answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core.errors import SCHEMA, DecodeError
from streamer.core.requests import DEFAULT_MAX_MESSAGE_BYTES, flatten_numbers
from streamer.core.types import Tensor
from streamer.oip.codec import DATATYPES, OipError, check_head
from streamer.oip.responses import InferResponse, OutputTensor
from tests.wire import decode_request

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A whole inference request as a client builds it."""

    inputs: tuple[Tensor, ...]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None


def _flat(data: np.ndarray) -> list[Any]:
    return data.reshape(-1).tolist()  # type: ignore[no-any-return]


def tensor_datatype(data: np.ndarray) -> str:
    for name, kind in DATATYPES.items():
        if data.dtype == kind and name != "BYTES":
            return name
    if data.dtype.kind in "OUS":
        return "BYTES"
    raise ValueError(f"no protocol datatype for {data.dtype}")


def encode_infer_request(request: InferRequest) -> bytes:
    """The JSON body of ``request`` (every tensor FP64 unless its data says otherwise: see ``tensor_datatype``)."""
    body: dict[str, Any] = {}
    if request.id is not None:
        body["id"] = request.id
    if request.parameters:
        body["parameters"] = request.parameters
    body["inputs"] = [
        {"name": t.name, "shape": list(t.shape), "datatype": tensor_datatype(t.data), "data": _flat(t.data)}
        for t in request.inputs
    ]
    if request.outputs is not None:
        body["outputs"] = [{"name": name} for name in request.outputs]
    return _encoder.encode(body)


def decode_infer_request(body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> InferRequest:
    """Parse a body back with the server's own rules (``check_head`` and the stream's request decoder)."""
    head = check_head(body, max_bytes)
    try:
        decoded = decode_request(body, max_bytes=max_bytes)
    except DecodeError as exc:
        raise OipError.of(exc) from None
    assert decoded.tensors is not None
    return InferRequest(decoded.tensors, head.id, head.parameters, head.outputs)


class _WireOutput(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] | None = None


class _WireResponse(msgspec.Struct):
    model_name: str
    outputs: list[_WireOutput]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None


_response_decoder = msgspec.json.Decoder(_WireResponse)


def decode_infer_response(body: bytes) -> InferResponse:
    wire = _response_decoder.decode(body)
    tensors = []
    for o in wire.outputs:
        if o.datatype not in DATATYPES:
            raise OipError.of(DecodeError(SCHEMA, f"output {o.name!r} has unknown datatype {o.datatype!r}"))
        if o.datatype in ("BYTES", "BOOL"):
            data = _flat_any(o.data)
            if o.datatype == "BOOL":
                data = [bool(v) for v in data]
        else:
            data = flatten_numbers(o.data, o.name)
            if o.datatype.startswith(("INT", "UINT")):
                data = [int(v) for v in data]
        if len(data) != math.prod(o.shape):
            raise OipError.of(DecodeError(SCHEMA, f"output {o.name!r} has {len(data)} values for shape {o.shape}"))
        tensors.append(OutputTensor(o.name, o.datatype, tuple(o.shape), data))
    return InferResponse(wire.model_name, wire.model_version or "", tuple(tensors), wire.id, wire.parameters or {})


def tensor_array(tensor: OutputTensor) -> np.ndarray:
    return np.asarray(tensor.data, dtype=DATATYPES[tensor.datatype]).reshape(tensor.shape)


def _flat_any(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        flat.extend(_flat_any(item) if isinstance(item, list) else [item])
    return flat
