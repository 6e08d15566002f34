"""Bytes in, values out, and back: the wire format of requests, feedback, predictions and dead letters
(contract sections 2-5).

Decoding raises (or, for a batch, reports per row) only ``DecodeError`` whatever the bytes, and its ``reason``
is the dead-letter reason: ``too-large`` (over the byte limit, checked before parsing), ``invalid-json`` (not
JSON, or not UTF-8 anywhere -- JSON text is UTF-8, RFC 8259 -- including inside a string the model never
reads), ``schema`` (valid JSON of the wrong shape: not an object, no ``features``/``inputs``, a feature of the
wrong type, an OIP tensor whose data does not fit its shape) and ``non-finite`` (a number JSON can spell but
float64 can't hold, such as ``1e999``). Whether a null or a string feature is acceptable depends on the model
card and is decided later, in ``features.py``.

``decode_requests`` takes a whole batch of raw values and returns the good ones (as msgspec structs, decoded
in C at about a microsecond each, no intermediate object graph) and the bad ones by row, so one bad row never
fails its batch-mates. Values are decoded one call each, not by joining the batch into one JSON array: a
hostile value can close its own object and open another (``...}, {...``), and two such values can join into
an array of the right length that neither is on its own.

Encoding is bulk too: ``encode_prediction_bodies`` turns a batch of prediction objects into their JSON bytes
with one encoder call (msgspec's newline-delimited output, split on newlines, which JSON strings always
escape), without the closing brace, so that ``finish_predictions`` can append ``latency_ms`` -- measured when
the prediction is produced (contract section 3) -- for the whole batch at once.

The JSON Schemas in ``schemas/`` describe the same envelopes; a test runs a corpus through both and requires
them to agree.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core.errors import INVALID_JSON, NON_FINITE, SCHEMA, TOO_LARGE, DecodeError
from streamer.core.types import Headers, Label, Prediction, SourceRef, Tensor

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
DEFAULT_MAX_ROWS = 10_000
_OIP_NUMERIC = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)

# Header names of the contract (section 5), also carried by predictions (an extension: recovery reads them).
MODEL_HEADER = "streamer-model"
ERROR_HEADER = "streamer-error"
ERROR_DETAIL_HEADER = "streamer-error-detail"
SOURCE_TOPIC = "streamer-source-topic"
SOURCE_PARTITION = "streamer-source-partition"
SOURCE_OFFSET = "streamer-source-offset"
ORIGINAL_SIZE_HEADER = "streamer-original-size"
ORIGINAL_SHA256_HEADER = "streamer-original-sha256"


class WireTensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class WireRequest(msgspec.Struct):
    """A request as decoded: exactly one of ``features`` or ``inputs`` is set (checked by the decoder)."""

    features: dict[str, float | str | None] | msgspec.UnsetType = msgspec.UNSET
    inputs: list[WireTensor] | msgspec.UnsetType = msgspec.UNSET
    id: str | None = None
    model: str | None = None


class PlainRequest(msgspec.Struct):
    """The common request: every feature a number. Decoded as such, its features need no per-value check."""

    features: dict[str, float]
    inputs: Any = msgspec.UNSET
    id: str | None = None
    model: str | None = None


class _WireLabel(msgspec.Struct):
    id: str
    label: float
    model: str | None = None


_request_decoder = msgspec.json.Decoder(WireRequest)
_plain_decoder = msgspec.json.Decoder(PlainRequest)
_label_decoder = msgspec.json.Decoder(_WireLabel)
_encoder = msgspec.json.Encoder()


# msgspec decodes nested JSON recursively, also where it skips a value (an unknown field, an ``Any``): a value
# nested about a thousand deep raises ``RecursionError``, not ``msgspec.DecodeError``. Both mean bad input.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def _translate(error: msgspec.DecodeError | RecursionError) -> DecodeError:
    message = str(error)
    if isinstance(error, RecursionError):
        return DecodeError(INVALID_JSON, f"nested too deeply ({message})")
    if isinstance(error, msgspec.ValidationError):
        if message.startswith("Number out of range"):
            return DecodeError(NON_FINITE, f"a number is out of float64 range ({message})")
        return DecodeError(SCHEMA, message)
    return DecodeError(INVALID_JSON, message)


def _checked(value: bytes | None, max_bytes: int) -> bytes:
    """Size and encoding checks before parsing; raises ``DecodeError``."""
    if value is None:
        raise DecodeError(SCHEMA, "the message has no value (a tombstone)")
    if len(value) > max_bytes:
        raise DecodeError(TOO_LARGE, f"the message has {len(value)} bytes, over the limit of {max_bytes}")
    if not value.isascii():  # ASCII is valid UTF-8; only the rest needs the full check
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(INVALID_JSON, f"not UTF-8 at byte {exc.start}: {exc.reason}") from None
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


def _tensor(wire: WireTensor, max_rows: int) -> Tensor:
    if wire.datatype not in _OIP_NUMERIC:
        raise DecodeError(SCHEMA, f"input {wire.name!r} has datatype {wire.datatype!r}; only numeric ones")
    if not 1 <= len(wire.shape) <= 2 or any(d < 0 for d in wire.shape):
        raise DecodeError(SCHEMA, f"input {wire.name!r} has shape {wire.shape}; rank 1 or 2 expected")
    if wire.shape[0] > max_rows:
        raise DecodeError(TOO_LARGE, f"input {wire.name!r} has {wire.shape[0]} rows, over the limit of {max_rows}")
    data = np.asarray(_flatten_numbers(wire.data, wire.name), dtype=np.float64)
    if data.size != math.prod(wire.shape):
        raise DecodeError(SCHEMA, f"input {wire.name!r} has {data.size} values for shape {wire.shape}")
    if not np.isfinite(data).all():
        raise DecodeError(NON_FINITE, f"input {wire.name!r} holds a number out of float64 range")
    return Tensor(wire.name, tuple(wire.shape), data)


def _decode_one(value: bytes | None, max_bytes: int, max_rows: int) -> tuple[WireRequest, tuple[Tensor, ...] | None]:
    raw = _checked(value, max_bytes)
    try:
        wire = _request_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise _translate(exc) from None
    has_features = wire.features is not msgspec.UNSET
    has_inputs = wire.inputs is not msgspec.UNSET
    if has_features == has_inputs:
        raise DecodeError(SCHEMA, "a request needs exactly one of 'features' or 'inputs'")
    if has_features:
        return wire, None
    if not wire.inputs:
        raise DecodeError(SCHEMA, "'inputs' is empty")
    return wire, tuple(_tensor(t, max_rows) for t in wire.inputs)  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class RequestBody:
    """One decoded request (off the hot path: tools, tests). Exactly one of ``features`` or ``tensors`` is set."""

    id: str | None
    model: str | None
    features: dict[str, float | str | None] | None = None
    tensors: tuple[Tensor, ...] | None = None

    @property
    def is_oip(self) -> bool:
        return self.tensors is not None


def decode_request(
    value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_rows: int = DEFAULT_MAX_ROWS
) -> RequestBody:
    """Decode one request value (contract section 2) or raise ``DecodeError``."""
    try:
        wire, tensors = _decode_one(value, max_bytes, max_rows)
    except _DECODE_ERRORS as exc:
        raise _translate(exc) from None
    features = None if tensors is not None else wire.features
    return RequestBody(wire.id, wire.model, features, tensors)  # type: ignore[arg-type]


@dataclass(slots=True)
class DecodedRequests:
    """The requests of a batch that decoded, and why the others did not.

    ``rows[i]`` is the batch row of ``wires[i]`` (ascending); ``tensors`` maps ``i`` to the decoded inputs of
    an OIP request (absent for a JSON request, whose ``wires[i].features`` is set); ``errors`` maps a batch row
    to its dead-letter reason. Every row of the batch is in exactly one of ``rows`` and ``errors``. ``plain``:
    every request is JSON with numbers only (``PlainRequest``), so features need no per-value check.
    """

    rows: list[int]
    wires: list[WireRequest] | list[PlainRequest]
    tensors: dict[int, tuple[Tensor, ...]] = field(default_factory=dict)
    errors: dict[int, DecodeError] = field(default_factory=dict)
    plain: bool = False


_inputs_of = operator.attrgetter("inputs")


def decode_requests(
    values: Sequence[bytes | None],
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> DecodedRequests:
    """Decode a batch of request values (contract section 2), each on its own; bad rows are reported, not raised."""
    decode = _request_decoder.decode
    unset = msgspec.UNSET
    if values and None not in values and max(map(len, values)) <= max_bytes and b"".join(values).isascii():
        # The common batch -- ASCII JSON requests with numeric "features", within the limit -- in C-level passes.
        try:
            plain = list(map(_plain_decoder.decode, values))
        except _DECODE_ERRORS:
            plain = None
        if plain is not None and list(map(_inputs_of, plain)).count(unset) == len(plain):
            return DecodedRequests(list(range(len(values))), plain, plain=True)
    decoded = DecodedRequests([], [])
    rows, wires, tensors, errors = decoded.rows, decoded.wires, decoded.tensors, decoded.errors
    for row, value in enumerate(values):
        try:
            # The common request (ASCII JSON with "features", within the limit) is checked inline.
            if value is not None and len(value) <= max_bytes and value.isascii():
                wire = decode(value)
                if wire.features is not unset and wire.inputs is unset:
                    rows.append(row)
                    wires.append(wire)
                    continue
            wire, inputs = _decode_one(value, max_bytes, max_rows)
        except _DECODE_ERRORS as exc:
            errors[row] = _translate(exc)
            continue
        except DecodeError as exc:
            errors[row] = exc
            continue
        if inputs is not None:
            tensors[len(wires)] = inputs
        rows.append(row)
        wires.append(wire)
    return decoded


def decode_label(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Label:
    """Decode one feedback value (contract section 4) or raise ``DecodeError``."""
    raw = _checked(value, max_bytes)
    try:
        wire = _label_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise _translate(exc) from None
    if not math.isfinite(wire.label):
        raise DecodeError(NON_FINITE, "the label is not a finite number")
    return Label(id=wire.id, label=wire.label, model=wire.model)


def model_from_headers(headers: Headers | None) -> str | None:
    """The ``streamer-model`` header (contract section 2): a model name or ``name@version``, if present.

    A header value that is not UTF-8 names no model that exists; it is decoded with replacement characters so
    that the dead letter's detail shows what was asked.
    """
    for name, value in headers or ():
        if name == MODEL_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def model_header(model: str | None) -> Headers | None:
    """The headers of a request that names ``model`` by header (None: no headers)."""
    return None if model is None else [(MODEL_HEADER, model.encode())]


# ------------------------------------------------------------------------------------------------ outputs


def source_headers(topic: str, partition: int, offsets: Sequence[int]) -> list[Headers]:
    """Headers of every output: its request's coordinates. The topic and partition tuples are shared by the
    batch's records (built once), only the offset's is per record."""
    topic_header = (SOURCE_TOPIC, topic.encode())
    partition_header = (SOURCE_PARTITION, b"%d" % partition)
    return [[topic_header, partition_header, (SOURCE_OFFSET, b"%d" % offset)] for offset in offsets]


def dead_letter_headers(error: DecodeError, source: SourceRef, own: Headers | None = None) -> Headers:
    """The headers of a dead letter (contract section 5): the request's own headers, then the contract's."""
    return [
        *(own or ()),
        (ERROR_HEADER, error.reason.encode()),
        (ERROR_DETAIL_HEADER, error.detail.encode("utf-8", "replace")),
        (SOURCE_TOPIC, source.topic.encode()),
        (SOURCE_PARTITION, str(source.partition).encode()),
        (SOURCE_OFFSET, str(source.offset).encode()),
    ]


# librdkafka counts a message as key + value + header names and values; the record and batch framing of the
# protocol (varints, a 61-byte batch header, per-header lengths) comes on top. This margin covers that framing.
RECORD_OVERHEAD_BYTES = 512


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    """The bytes a record takes on the wire, to compare with a producer's or a topic's limit."""
    size = RECORD_OVERHEAD_BYTES + (len(key) if key else 0) + (len(value) if value else 0)
    for name, header_value in headers or ():
        size += len(name) + (len(header_value) if header_value else 0) + 8
    return size


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, max_bytes: int
) -> tuple[bytes | None, Headers]:
    """A dead letter that fits in ``max_bytes`` (contract section 5).

    Unchanged when it fits. Otherwise its value is cut to what fits, and headers ``streamer-original-size``
    and ``streamer-original-sha256`` say what the original was, so the request is still answered and the
    original can be matched by whoever keeps it. The key is never cut (it places and identifies the output);
    a key alone over the limit leaves an empty value, and the caller's producer refuses it.
    """
    if value is None or record_size(key, value, headers) <= max_bytes:
        return value, headers
    extra: Headers = [
        (ORIGINAL_SIZE_HEADER, str(len(value)).encode()),
        (ORIGINAL_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()),
    ]
    headers = headers + extra
    room = max_bytes - record_size(key, b"", headers)
    return value[: max(room, 0)], headers


def encode_prediction_bodies(bodies: Sequence[dict[str, Any]]) -> list[bytes]:
    """JSON of each prediction object, without its closing brace (``finish_predictions`` adds the rest)."""
    if not bodies:
        return []
    lines = _encoder.encode_lines(bodies).split(b"\n")
    lines.pop()  # the output ends with a newline
    return [line[:-1] for line in lines]


def _json_lines(values: Sequence[Any]) -> list[bytes]:
    """Each value's JSON, from one encoder call."""
    lines = _encoder.encode_lines(values).split(b"\n")
    lines.pop()
    return lines


def _constant(value: object) -> bytes:
    """JSON of a constant part of a template, with ``%`` escaped for bytes formatting."""
    return _encoder.encode(value).replace(b"%", b"%%")


def encode_single_predictions(
    ids: Sequence[str],
    model: str,
    version: str,
    scores: Sequence[float],
    labels: Sequence[Any] | None,
    outputs: Mapping[str, Sequence[Any]],
    topic: str,
    partition: int,
    offsets: Sequence[int],
    decisions: Sequence[str] | None = None,
    reasons: Sequence[Sequence[str]] | None = None,
) -> list[bytes]:
    """The open bodies of one-row predictions of one model version, a column at a time; ``decisions`` and
    ``reasons`` (a graph's rules) follow ``outputs``.

    Same JSON as ``encode_prediction_bodies`` gives for the same objects (a test holds them equal), built with
    one encoder call per column and one bytes format per row instead of a dict per row.
    """
    if not ids:
        return []
    names = list(outputs)
    template = (
        b'{"id":%s,"model":' + _constant(model) + b',"version":' + _constant(version) + b',"score":%s,"label":%s'
        b',"outputs":{'
        + b",".join(_constant(name) + b":%s" for name in names)
        + (b'},"decision":%s,"reasons":%s' if decisions is not None else b"}")
        + b',"source":{"topic":'
        + _constant(topic)
        + b',"partition":'
        + b"%d" % partition
        + b',"offset":%d}'
    )
    columns = [_json_lines(ids), _json_lines(scores), _json_lines(labels) if labels is not None else None]
    if columns[2] is None:
        columns[2] = [b"null"] * len(ids)
    columns += [_json_lines(outputs[name]) for name in names]
    if decisions is not None:
        columns += [_json_lines(decisions), _json_lines(reasons if reasons is not None else [[]] * len(ids))]
    columns.append(offsets)  # type: ignore[arg-type]
    return [template % row for row in zip(*columns, strict=True)]  # type: ignore[arg-type]


def finish_predictions(
    open_bodies: Sequence[bytes], timestamps_ms: Sequence[int], now_ms: float
) -> tuple[list[bytes], np.ndarray]:
    """Close each open body with its ``latency_ms`` (from the request's Kafka timestamp to ``now_ms``).

    Returns the values and the latencies (milliseconds, rounded to microseconds), computed for the batch at once.
    """
    if not open_bodies:
        return [], np.empty(0)
    latencies = np.round(now_ms - np.asarray(timestamps_ms, dtype=np.float64), 3)
    texts = _encoder.encode_lines(latencies.tolist()).split(b"\n")
    return [b'%s,"latency_ms":%s}' % pair for pair in zip(open_bodies, texts, strict=False)], latencies


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
    return _encoder.encode(prediction_body(prediction))


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
    except _DECODE_ERRORS as exc:
        raise _translate(exc) from None
    except (KeyError, TypeError) as exc:
        raise DecodeError(SCHEMA, f"not a prediction: {exc!r}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(INVALID_JSON, f"not UTF-8: {exc.reason}") from None
