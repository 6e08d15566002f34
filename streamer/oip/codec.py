"""Open Inference Protocol v2 (KServe v2 REST) as bytes in, values out: the codec of on-demand serving.

Pure: no socket, no clock, no model runtime. The HTTP adapter (``adapters.oip_http``) routes a URL, hands the
request body to the *stream's* scoring path and turns what comes back into the protocol's JSON with these
functions, so that on demand and on the stream a row gets one answer.

An inference request body is the protocol's ``{"id"?, "parameters"?, "inputs": [...], "outputs"?}``. It is
scored as a request record: the stream's envelope already takes the protocol's ``inputs`` (one
``[rows, n_features]`` tensor named as the card's ``input``, or one ``[rows]`` tensor per feature named as the
card's features), so decoding, validation and dead-letter reasons are the stream's own. ``check_head`` reads
only what the protocol adds around the inputs: the request ``id``, ``parameters`` (``key``: the routing key
of a canary split, as a Kafka record key would be) and the requested ``outputs``.

A response carries every output of the model under its own name, plus ``score`` (FP64), ``label`` (INT64, a
classifier's) and, where a graph's rules decided, ``decision`` and ``reasons`` (BYTES). A model output whose
name is one of those four is listed as ``outputs.<name>``. ``parameters`` carries the streamer fields: the
prediction ``id`` (the request's, or ``oip:0:<n>``), ``model`` and the ``version`` that served the request.

Errors are the protocol's ``{"error": "<message>"}`` with its status codes: a message starts with the
stream's dead-letter reason (``invalid-json``, ``schema``, ``non-finite``, ``too-large``: 400;
``unknown-model``: 404; ``scoring-failed``: 500), so a bad row reads the same on demand as in the dead-letter
topic; 503 while the server is not ready.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core import envelope
from streamer.core.cards import ModelCard
from streamer.core.errors import (
    INVALID_JSON,
    NON_FINITE,
    SCHEMA,
    SCORING_FAILED,
    TOO_LARGE,
    UNKNOWN_MODEL,
    DecodeError,
)
from streamer.core.types import Tensor

# The protocol's datatypes and numpy's (BYTES: UTF-8 strings here).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# ONNX Runtime's type strings -> the protocol's datatypes (metadata of a model's outputs).
ONNX_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
STREAMER_OUTPUTS = ("score", "label", "decision", "reasons")
STATUS_OF_REASON = {
    INVALID_JSON: 400,
    SCHEMA: 400,
    NON_FINITE: 400,
    TOO_LARGE: 400,
    UNKNOWN_MODEL: 404,
    SCORING_FAILED: 500,
}
PLATFORM = "onnxruntime_onnx"

_encoder = msgspec.json.Encoder()


class OipError(Exception):
    """A request the protocol answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def of(cls, error: DecodeError) -> OipError:
        """The protocol error of a dead-letter reason: the message starts with the reason word."""
        return cls(STATUS_OF_REASON.get(error.reason, 400), f"{error.reason}: {error.detail}")

    def body(self) -> bytes:
        return error_body(self.message)


def error_body(message: str) -> bytes:
    return _encoder.encode({"error": message})


# ------------------------------------------------------------------------------------------------ requests


class RequestedOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class _Head(msgspec.Struct):
    """What the protocol wraps around the inputs; ``inputs`` is kept raw (the stream's decoder reads it)."""

    inputs: msgspec.Raw
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestedOutput] | None = None
    model: Any = msgspec.UNSET
    features: Any = msgspec.UNSET


@dataclass(frozen=True, slots=True)
class RequestHead:
    id: str | None
    key: bytes | None
    outputs: tuple[str, ...] | None  # None: every output
    parameters: dict[str, Any] = field(default_factory=dict)


_head_decoder = msgspec.json.Decoder(_Head)


def _decode_error(error: BaseException) -> OipError:
    if isinstance(error, msgspec.ValidationError):
        return OipError.of(DecodeError(SCHEMA, str(error)))
    if isinstance(error, RecursionError):
        return OipError.of(DecodeError(INVALID_JSON, f"nested too deeply ({error})"))
    return OipError.of(DecodeError(INVALID_JSON, str(error)))


def check_head(body: bytes, max_bytes: int = envelope.DEFAULT_MAX_MESSAGE_BYTES) -> RequestHead:
    """The protocol fields of an inference request body, or ``OipError`` (400, with the dead-letter reason).

    The inputs themselves are checked by the stream's decoder when the body is scored."""
    if len(body) > max_bytes:
        raise OipError.of(DecodeError(TOO_LARGE, f"the request has {len(body)} bytes, over the limit of {max_bytes}"))
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OipError.of(DecodeError(INVALID_JSON, f"not UTF-8 at byte {exc.start}: {exc.reason}")) from None
    try:
        head = _head_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(exc) from None
    if head.model is not msgspec.UNSET or head.features is not msgspec.UNSET:
        field_name = "model" if head.model is not msgspec.UNSET else "features"
        raise OipError.of(
            DecodeError(SCHEMA, f"{field_name!r} is not a field of an inference request (the URL names the model)")
        )
    parameters = dict(head.parameters or {})
    key = parameters.get("key")
    if key is not None and not isinstance(key, str):
        raise OipError.of(DecodeError(SCHEMA, "parameters.key must be a string"))
    outputs = tuple(o.name for o in head.outputs) if head.outputs else None
    return RequestHead(head.id, key.encode() if key is not None else None, outputs, parameters)


def from_binary(body: bytes, header_length: int) -> bytes:
    """A request of the binary tensor data extension (tritonclient's default: ``Inference-Header-Content-Length``
    names the JSON part, each input's ``parameters.binary_data_size`` its raw little-endian bytes after it)
    as the plain JSON body the stream decodes."""
    if not 0 <= header_length <= len(body):
        raise OipError.of(DecodeError(SCHEMA, f"Inference-Header-Content-Length {header_length} is not in the body"))
    try:
        head = msgspec.json.decode(body[:header_length])
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(exc) from None
    inputs = head.get("inputs") if isinstance(head, dict) else None
    if not isinstance(inputs, list):
        raise OipError.of(DecodeError(SCHEMA, "an inference request needs 'inputs'"))
    position = header_length
    for tensor in inputs:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        datatype = tensor.get("datatype")
        if not isinstance(size, int) or size < 0 or position + size > len(body):
            raise OipError.of(DecodeError(SCHEMA, f"binary_data_size {size!r} is not in the body"))
        if datatype not in DATATYPES or datatype in ("BYTES", "BOOL"):
            raise OipError.of(DecodeError(SCHEMA, f"binary input of datatype {datatype!r}; only numeric ones"))
        dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
        if size % dtype.itemsize:
            raise OipError.of(DecodeError(SCHEMA, f"binary_data_size {size} is not a multiple of {datatype}'s size"))
        values = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=position)
        position += size
        tensor["data"] = values.tolist()
        del parameters["binary_data_size"]
    if position != len(body):
        raise OipError.of(DecodeError(SCHEMA, f"{len(body) - position} bytes after the binary inputs"))
    try:
        return _encoder.encode(head)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OipError.of(DecodeError(SCHEMA, str(exc))) from None


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A whole inference request as a client builds it (tools, tests, the bench)."""

    inputs: tuple[Tensor, ...]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None


def _flat(data: np.ndarray) -> list[Any]:
    return data.reshape(-1).tolist()


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


def decode_infer_request(body: bytes, max_bytes: int = envelope.DEFAULT_MAX_MESSAGE_BYTES) -> InferRequest:
    """Parse a body back (the server scores bodies through the stream's decoder; this is its twin for tools)."""
    head = check_head(body, max_bytes)
    try:
        decoded = envelope.decode_request(body, max_bytes=max_bytes)
    except DecodeError as exc:
        raise OipError.of(exc) from None
    assert decoded.tensors is not None
    return InferRequest(decoded.tensors, head.id, head.parameters, head.outputs)


def tensor_datatype(data: np.ndarray) -> str:
    for name, kind in DATATYPES.items():
        if data.dtype == kind and name != "BYTES":
            return name
    if data.dtype.kind in "OUS":
        return "BYTES"
    raise ValueError(f"no protocol datatype for {data.dtype}")


# ------------------------------------------------------------------------------------------------ responses


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]  # flat, row-major

    def array(self) -> np.ndarray:
        return np.asarray(self.data, dtype=DATATYPES[self.datatype]).reshape(self.shape)


@dataclass(frozen=True, slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: tuple[OutputTensor, ...]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def output(self, name: str) -> OutputTensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


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


def encode_infer_response(response: InferResponse) -> bytes:
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": t.data} for t in response.outputs
    ]
    return _encoder.encode(body)


def decode_infer_response(body: bytes) -> InferResponse:
    try:
        wire = _response_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(exc) from None
    outputs = []
    for o in wire.outputs:
        if o.datatype not in DATATYPES:
            raise OipError.of(DecodeError(SCHEMA, f"output {o.name!r} has unknown datatype {o.datatype!r}"))
        if o.datatype in ("BYTES", "BOOL"):
            data = _flat_any(o.data)
            if o.datatype == "BOOL":
                data = [bool(v) for v in data]
        else:
            try:
                data = envelope._flatten_numbers(o.data, o.name)
            except DecodeError as exc:
                raise OipError.of(exc) from None
            if o.datatype.startswith(("INT", "UINT")):
                data = [int(v) for v in data]
        if len(data) != math.prod(o.shape):
            raise OipError.of(DecodeError(SCHEMA, f"output {o.name!r} has {len(data)} values for shape {o.shape}"))
        outputs.append(OutputTensor(o.name, o.datatype, tuple(o.shape), data))
    return InferResponse(wire.model_name, wire.model_version or "", tuple(outputs), wire.id, wire.parameters or {})


def _flat_any(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        flat.extend(_flat_any(item) if isinstance(item, list) else [item])
    return flat


def _tensor_of(name: str, values: Any, datatype: str | None) -> OutputTensor:
    """One response tensor from a prediction field: a scalar (one row) or nested per-row lists."""
    if not isinstance(values, list):
        values = [values]
    if datatype == "BYTES" or (datatype is None and values and isinstance(_first(values), str | dict | list)):
        flat = [v if isinstance(v, str) else _encoder.encode(v).decode() for v in values]
        return OutputTensor(name, "BYTES", (len(flat),), flat)
    array = np.asarray(values)
    if datatype is None:
        datatype = "BOOL" if array.dtype == np.bool_ else "INT64" if array.dtype.kind in "iu" else "FP64"
    return OutputTensor(name, datatype, array.shape, _flat(array))


def _first(values: list[Any]) -> Any:
    value: Any = values
    while isinstance(value, list) and value:
        value = value[0]
    return value


def output_name(name: str) -> str:
    """A model output's name in a response: its own, unless it is one of the streamer's fields."""
    return f"outputs.{name}" if name in STREAMER_OUTPUTS else name


def response_of(
    prediction: Mapping[str, Any],
    request_id: str | None,
    requested: Sequence[str] | None = None,
    datatypes: Mapping[str, str] | None = None,
) -> InferResponse:
    """The protocol's response for one prediction of the stream's scoring path (its JSON body, parsed).

    ``datatypes``: the model's output datatypes by output name (ONNX Runtime's, through ``ONNX_DATATYPES``),
    so that an FP32 output is answered as FP32; an output not listed gets its datatype from its values.
    ``requested``: the output names the request asked for (None: all); an unknown one is a ``schema`` error."""
    datatypes = datatypes or {}
    outputs = [
        _tensor_of(output_name(name), values, datatypes.get(name))
        for name, values in (prediction.get("outputs") or {}).items()
    ]
    outputs.append(_tensor_of("score", prediction["score"], "FP64"))
    if prediction.get("label") is not None:
        outputs.append(_tensor_of("label", prediction["label"], "INT64"))
    if prediction.get("decision") is not None:
        outputs.append(_tensor_of("decision", prediction["decision"], "BYTES"))
        reasons = prediction.get("reasons")
        if reasons is not None:
            rows = reasons if reasons and isinstance(reasons[0], list) else [reasons]
            outputs.append(OutputTensor("reasons", "BYTES", (len(rows),), [_encoder.encode(r).decode() for r in rows]))
    if requested is not None:
        by_name = {t.name: t for t in outputs}
        unknown = [name for name in requested if name not in by_name]
        if unknown:
            asked, known = ", ".join(map(repr, unknown)), ", ".join(by_name)
            raise OipError.of(DecodeError(SCHEMA, f"no output named {asked} (outputs: {known})"))
        outputs = [by_name[name] for name in requested]
    parameters = {"id": prediction["id"], "model": prediction["model"], "version": prediction["version"]}
    return InferResponse(prediction["model"], str(prediction["version"]), tuple(outputs), request_id, parameters)


# ------------------------------------------------------------------------------------------------ metadata


@dataclass(frozen=True, slots=True)
class OutputInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]


def model_metadata(
    name: str,
    cards: Mapping[int, ModelCard],
    serving: int | None,
    version: int | None = None,
    outputs: Iterable[OutputInfo] = (),
    has_rules: bool = False,
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: inputs, outputs, datatypes and shapes from the card.

    The input is the card's ``[rows, n_features]`` FP32 tensor (-1: any number of rows); one ``[rows]`` tensor
    per feature (``parameters.features``, in column order) is the other accepted form, and a declared graph's
    only one (it has no matrix input)."""
    card = cards[version if version is not None else serving]  # type: ignore[index]
    listed = [
        {"name": output_name(o.name), "datatype": o.datatype, "shape": [-1 if d < 0 else d for d in o.shape]}
        for o in outputs
    ]
    listed.append({"name": "score", "datatype": "FP64", "shape": [-1]})
    if card.label is not None:
        listed.append({"name": "label", "datatype": "INT64", "shape": [-1]})
    if has_rules:
        listed += [{"name": "decision", "datatype": "BYTES", "shape": [-1]}]
        listed += [{"name": "reasons", "datatype": "BYTES", "shape": [-1]}]
    return {
        "name": name,
        "versions": [str(version)] if version is not None else [str(v) for v in sorted(cards)],
        "platform": PLATFORM,
        "inputs": (
            [{"name": card.input, "datatype": "FP32", "shape": [-1, len(card.features)]}]
            if card.input  # a declared graph has no matrix input of its own: one tensor per feature
            else [{"name": feature, "datatype": "FP32", "shape": [-1]} for feature in card.features]
        ),
        "outputs": listed,
        "parameters": {
            "features": ",".join(card.features),
            "serving_version": str(card.version),
            "task": card.task,
        },
    }


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "streamer", "version": version, "extensions": []}


# ------------------------------------------------------------------------------------------------ routes


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed URL path: ``kind`` is live, ready, server, model, model_ready, infer or metrics."""

    kind: str
    model: str | None = None
    version: int | None = None


_GET_KINDS = {"": "model", "ready": "model_ready"}


def route(method: str, path: str) -> Route:
    """The endpoint of ``method path`` or ``OipError`` (404 for a path the protocol does not define, 405 for
    the wrong method, 400 for a version that is not a number)."""
    path = path.split("?", 1)[0].rstrip("/")
    if method == "GET" and path == "/metrics":
        return Route("metrics")
    parts = path.split("/")[1:]
    if not parts or parts[0] != "v2":
        raise OipError(404, f"no endpoint {path or '/'} (the Open Inference Protocol v2 lives under /v2)")
    rest = parts[1:]
    if rest in (["health", "live"], ["health", "ready"], []):
        kind = {0: "server"}.get(len(rest)) or rest[1]
        _method(method, "GET", path)
        return Route(kind)
    if len(rest) < 2 or rest[0] != "models" or not rest[1]:
        raise OipError(404, f"no endpoint {path}")
    name, tail = rest[1], rest[2:]
    version = None
    if len(tail) >= 2 and tail[0] == "versions":
        if not tail[1].isdigit():
            raise OipError.of(DecodeError(UNKNOWN_MODEL, f"model {name!r} has no version {tail[1]!r}"))
        version, tail = int(tail[1]), tail[2:]
    if tail == ["infer"]:
        _method(method, "POST", path)
        return Route("infer", name, version)
    if len(tail) <= 1 and (not tail or tail[0] in _GET_KINDS):
        _method(method, "GET", path)
        return Route(_GET_KINDS[tail[0] if tail else ""], name, version)
    raise OipError(404, f"no endpoint {path}")


def _method(method: str, expected: str, path: str) -> None:
    if method != expected:
        raise OipError(405, f"{path} takes {expected}, not {method}")


def model_string(name: str, version: int | None) -> str:
    """The stream's model string (the ``streamer-model`` header) for a URL's model and version."""
    return name if version is None else f"{name}@{version}"
