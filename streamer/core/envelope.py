"""Bytes in, values out, and back: the wire format of requests, feedback and predictions (contract 2-4).

Decoding raises only ``DecodeError`` whatever the bytes, and its ``reason`` is the dead-letter reason:
``too-large`` (over the byte limit, checked before parsing), ``invalid-json`` (not UTF-8 JSON), ``schema``
(valid JSON of the wrong shape: not an object, no ``features``/``inputs``, a feature of the wrong type, an
OIP tensor whose data does not fit its shape) and ``non-finite`` (a number JSON can spell but float64 can't
hold, such as ``1e999``). Whether a null or a string feature is acceptable depends on the model card and is
decided later, in ``features.py``.

``decode_requests`` takes a whole batch of raw values and returns the good ones and the bad ones separately,
with their positions, so that one bad row never fails its batch-mates. msgspec decodes straight into typed
structs (about a microsecond per event) without building an intermediate object graph; it does no I/O,
which is why the core may use it.

The JSON Schemas in ``schemas/`` describe the same envelopes; a test runs a corpus through both and requires
them to agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from streamer.core.errors import INVALID_JSON, NON_FINITE, SCHEMA, TOO_LARGE, DecodeError
from streamer.core.types import Label, Prediction, RequestBody, SourceRef, Tensor

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
DEFAULT_MAX_ROWS = 10_000
_OIP_NUMERIC = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)


class _OipInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class _WireRequest(msgspec.Struct):
    features: dict[str, float | str | None] | msgspec.UnsetType = msgspec.UNSET
    inputs: list[_OipInput] | msgspec.UnsetType = msgspec.UNSET
    id: str | None = None
    model: str | None = None


class _WireLabel(msgspec.Struct):
    id: str
    label: float
    model: str | None = None


_request_decoder = msgspec.json.Decoder(_WireRequest)
_label_decoder = msgspec.json.Decoder(_WireLabel)
_encoder = msgspec.json.Encoder()


def _translate(error: msgspec.DecodeError) -> DecodeError:
    message = str(error)
    if isinstance(error, msgspec.ValidationError):
        if message.startswith("Number out of range"):
            return DecodeError(NON_FINITE, f"a number is out of float64 range ({message})")
        return DecodeError(SCHEMA, message)
    return DecodeError(INVALID_JSON, message)


def _check_size(value: bytes | None, max_bytes: int) -> bytes:
    if value is None:
        raise DecodeError(SCHEMA, "the message has no value (a tombstone)")
    if len(value) > max_bytes:
        raise DecodeError(TOO_LARGE, f"the message has {len(value)} bytes, over the limit of {max_bytes}")
    return value


def _flatten_numbers(data: list[Any], name: str) -> list[float]:
    """OIP data may be flat or nested row-major; every leaf must be a JSON number (not a bool or string)."""
    flat: list[float] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise DecodeError(SCHEMA, f"input {name!r} data holds {type(item).__name__}, not a number")
            flat.append(item)
        else:
            stack.pop()
    return flat


def _tensor(wire: _OipInput, max_rows: int) -> Tensor:
    if wire.datatype not in _OIP_NUMERIC:
        raise DecodeError(SCHEMA, f"input {wire.name!r} has datatype {wire.datatype!r}; only numeric ones")
    if not 1 <= len(wire.shape) <= 2 or any(d < 0 for d in wire.shape):
        raise DecodeError(SCHEMA, f"input {wire.name!r} has shape {wire.shape}; rank 1 or 2 expected")
    if wire.shape[0] > max_rows:
        raise DecodeError(TOO_LARGE, f"input {wire.name!r} has {wire.shape[0]} rows, over the limit of {max_rows}")
    data = np.asarray(_flatten_numbers(wire.data, wire.name), dtype=np.float64)
    if data.size != math.prod(wire.shape):
        raise DecodeError(SCHEMA, f"input {wire.name!r} has {data.size} values for shape {wire.shape}")
    return Tensor(wire.name, tuple(wire.shape), data)


def decode_request(
    value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_rows: int = DEFAULT_MAX_ROWS
) -> RequestBody:
    """Decode one request value (contract section 2) or raise ``DecodeError``."""
    raw = _check_size(value, max_bytes)
    try:
        wire = _request_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise _translate(exc) from None
    has_features = wire.features is not msgspec.UNSET
    has_inputs = wire.inputs is not msgspec.UNSET
    if has_features == has_inputs:
        raise DecodeError(SCHEMA, "a request needs exactly one of 'features' or 'inputs'")
    if has_features:
        return RequestBody(id=wire.id, model=wire.model, features=wire.features)
    if not wire.inputs:
        raise DecodeError(SCHEMA, "'inputs' is empty")
    tensors = tuple(_tensor(t, max_rows) for t in wire.inputs)
    return RequestBody(id=wire.id, model=wire.model, tensors=tensors)


def decode_requests(
    values: Sequence[bytes | None],
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> tuple[list[tuple[int, RequestBody]], list[tuple[int, DecodeError]]]:
    """Decode a batch; returns (position, body) for the good values and (position, error) for the bad."""
    good: list[tuple[int, RequestBody]] = []
    bad: list[tuple[int, DecodeError]] = []
    for position, value in enumerate(values):
        try:
            good.append((position, decode_request(value, max_bytes=max_bytes, max_rows=max_rows)))
        except DecodeError as exc:
            bad.append((position, exc))
    return good, bad


def decode_label(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Label:
    """Decode one feedback value (contract section 4) or raise ``DecodeError``."""
    raw = _check_size(value, max_bytes)
    try:
        wire = _label_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise _translate(exc) from None
    if not math.isfinite(wire.label):
        raise DecodeError(NON_FINITE, "the label is not a finite number")
    return Label(id=wire.id, label=wire.label, model=wire.model)


MODEL_HEADER = "streamer-model"


def model_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """The ``streamer-model`` header (contract section 2): a model name or ``name@version``, if present."""
    for name, value in headers or ():
        if name == MODEL_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def dead_letter_headers(error: DecodeError, source: SourceRef) -> list[tuple[str, bytes]]:
    """The headers of a dead letter (contract section 5); key and value stay the original bytes."""
    return [
        ("streamer-error", error.reason.encode()),
        ("streamer-error-detail", error.detail.encode("utf-8", "replace")),
        ("streamer-source-topic", source.topic.encode()),
        ("streamer-source-partition", str(source.partition).encode()),
        ("streamer-source-offset", str(source.offset).encode()),
    ]


def encode_label(label: Label) -> bytes:
    body: dict[str, object] = {"id": label.id, "label": label.label}
    if label.model is not None:
        body["model"] = label.model
    return _encoder.encode(body)


def prediction_body(prediction: Prediction) -> dict[str, object]:
    """The prediction as the JSON object of contract section 3 (``decision`` only when rules made one)."""
    body: dict[str, object] = {
        "id": prediction.id,
        "model": prediction.model,
        "version": prediction.version,
        "score": prediction.score,
        "label": prediction.label,
        "outputs": prediction.outputs,
        "source": {
            "topic": prediction.source.topic,
            "partition": prediction.source.partition,
            "offset": prediction.source.offset,
        },
        "latency_ms": prediction.latency_ms,
    }
    if prediction.decision is not None:
        body["decision"] = prediction.decision
    return body


def encode_prediction(prediction: Prediction) -> bytes:
    return encode_body(prediction_body(prediction))


def encode_body(body: dict[str, object]) -> bytes:
    """A prediction body (as ``core.scoring`` builds it) as JSON bytes."""
    return _encoder.encode(body)


def decode_prediction(value: bytes) -> Prediction:
    """Parse a prediction back (consumers, tests, recovery). Raises ``DecodeError`` on anything else."""
    try:
        body = msgspec.json.decode(value)
        source = body["source"]
        return Prediction(
            id=body["id"],
            model=body["model"],
            version=body["version"],
            score=body["score"],
            label=body["label"],
            outputs=body["outputs"],
            source=SourceRef(source["topic"], source["partition"], source["offset"]),
            latency_ms=body["latency_ms"],
            decision=body.get("decision"),
        )
    except msgspec.DecodeError as exc:
        raise _translate(exc) from None
    except (KeyError, TypeError) as exc:
        raise DecodeError(SCHEMA, f"not a prediction: {exc!r}") from None
