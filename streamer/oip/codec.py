"""Open Inference Protocol v2 (KServe v2 REST) requests as bytes in, values out, and the protocol's errors.
Pure: no socket, no clock, no model runtime.

The HTTP adapter (``oip.http``) routes a URL (``oip.routes``), hands the request body to the *stream's* scoring
path and turns what comes back into the protocol's JSON (``oip.responses``), so that on demand and on the
stream a row gets one answer.

An inference request body is the protocol's ``{"id"?, "parameters"?, "inputs": [...], "outputs"?}``. It is
scored as a request record: the stream's envelope already takes the protocol's ``inputs`` (one
``[rows, n_features]`` tensor named as the card's ``input``, or one ``[rows]`` tensor per feature named as the
card's features), so decoding, validation and dead-letter reasons are the stream's own. ``check_head`` reads
only what the protocol adds around the inputs: the request ``id``, ``parameters`` (``key``: the routing key
of a canary split, as a Kafka record key would be) and the requested ``outputs``.

Errors are the protocol's ``{"error": "<message>"}``: a refused request's message starts with the stream's
dead-letter reason, so a bad row reads the same on demand as in the dead-letter topic, and its HTTP status is
the reason's, from the one reason table (``errors.REASONS``: 400, 404 for ``unknown-model``, 413 for
``too-large``, 500 for ``scoring-failed``, 503 for ``enrichment-failed``); 503 while the server is not ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core.errors import INVALID_JSON, REASONS, SCHEMA, TOO_LARGE, DeadLetterReason, DecodeError
from streamer.core.requests import DEFAULT_MAX_MESSAGE_BYTES

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

_encoder = msgspec.json.Encoder()


class OipError(Exception):
    """A request the protocol answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def of(cls, error: DecodeError) -> OipError:
        """The protocol error of a dead letter: the reason's status, a message starting with the reason word."""
        reason: DeadLetterReason = REASONS[error.reason]  # a DecodeError's reason is always in the table
        return cls(reason.http_status, f"{error.reason}: {error.detail}")

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


def check_head(body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> RequestHead:
    """The protocol fields of an inference request body, or ``OipError`` (with the dead-letter reason).

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
