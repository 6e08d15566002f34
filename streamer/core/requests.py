"""Bytes in, request values out: the request envelope (contract section 2).

Decoding raises (or, for a batch, reports per row) only ``DecodeError`` whatever the bytes, and its ``reason``
is the dead-letter reason: ``too-large`` (over the byte limit, checked before parsing), ``invalid-json`` (not
JSON, or not UTF-8 anywhere -- JSON text is UTF-8, RFC 8259 -- including inside a string the model never
reads), ``schema`` (valid JSON of the wrong shape: not an object, no ``features``/``inputs``, a feature of the
wrong type, an OIP tensor whose data does not fit its shape) and ``non-finite`` (a number JSON can spell but
float64 can't hold, such as ``1e999``). Whether a null or a string feature is acceptable depends on the model
card and is decided later, by the value rules (``value_rules``) that the column path of ``streamer batch``
applies too.

``decode_requests`` takes a whole batch of raw values and returns the good ones (as msgspec structs, decoded
in C at about a microsecond each, no intermediate object graph) and the bad ones by row, so one bad row never
fails its batch-mates. Values are decoded one call each, not by joining the batch into one JSON array: a
hostile value can close its own object and open another (``...}, {...``), and two such values can join into
an array of the right length that neither is on its own.

The JSON Schema ``schemas/request.schema.json`` describes the same envelope; a test runs a corpus through both
and requires them to agree.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core.errors import INVALID_JSON, NON_FINITE, SCHEMA, TOO_LARGE, DecodeError
from streamer.core.types import Tensor

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
DEFAULT_MAX_ROWS = 10_000
_OIP_NUMERIC = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)


def default_request_id(topic: str, partition: int, offset: int) -> str:
    """The id of a request that names none (contract section 2): ``"<topic>:<partition>:<offset>"``."""
    return f"{topic}:{partition}:{offset}"


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


class PlainRequest(msgspec.Struct, gc=False):
    """The common request: every feature a number. Decoded as such, its features need no per-value check.
    Not tracked by the garbage collector (decoded JSON holds no reference cycle)."""

    features: dict[str, float]
    inputs: Any = msgspec.UNSET
    id: str | None = None
    model: str | None = None


_request_decoder = msgspec.json.Decoder(WireRequest)
_plain_decoder = msgspec.json.Decoder(PlainRequest)


def feature_field(k: int) -> str:
    """The attribute holding feature k in the features of a request decoded by ``typed_decoder``."""
    return f"f{k}"


@functools.lru_cache(maxsize=64)
def typed_decoder(features: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
    """The decoder of the commonest request of all: to a model whose features are ``features``, with exactly
    these features, each a number. They land in a struct (feature k in ``feature_field(k)``), not a dict, and
    neither it nor the request is tracked by the garbage collector: no container per request, and about half the
    decoding time of ``PlainRequest`` (measured). It accepts a subset of what ``PlainRequest`` accepts, with the
    same values (a duplicate key: the last one, as a dict keeps it); whatever it refuses -- another feature, a
    missing one, a null, a string, a number beyond float64 -- is decoded by the general rules instead."""
    fields = [feature_field(k) for k in range(len(features))]
    features_type = msgspec.defstruct(
        "TypedFeatures",
        [(name, float) for name in fields],
        rename=dict(zip(fields, features, strict=True)),
        forbid_unknown_fields=True,
        gc=False,
    )
    request = msgspec.defstruct(
        "TypedRequest",
        [
            ("features", features_type),
            ("inputs", Any, msgspec.UNSET),
            ("id", str | None, None),
            ("model", str | None, None),
        ],
        gc=False,
    )
    return msgspec.json.Decoder(request)


# msgspec decodes nested JSON recursively, also where it skips a value (an unknown field, an ``Any``): a value
# nested about a thousand deep raises ``RecursionError``, not ``msgspec.DecodeError``. Both mean bad input.
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def translate(error: msgspec.DecodeError | RecursionError) -> DecodeError:
    """The dead-letter reason of a msgspec failure (a number beyond float64 is ``non-finite``, not ``schema``)."""
    message = str(error)
    if isinstance(error, RecursionError):
        return DecodeError(INVALID_JSON, f"nested too deeply ({message})")
    if isinstance(error, msgspec.ValidationError):
        if message.startswith("Number out of range"):
            return DecodeError(NON_FINITE, f"a number is out of float64 range ({message})")
        return DecodeError(SCHEMA, message)
    return DecodeError(INVALID_JSON, message)


def checked(value: bytes | None, max_bytes: int) -> bytes:
    """Size and encoding checks before parsing (requests and feedback alike); raises ``DecodeError``."""
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


def flatten_numbers(data: list[Any], name: str) -> list[float]:
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
    data = np.asarray(flatten_numbers(wire.data, wire.name), dtype=np.float64)
    if data.size != math.prod(wire.shape):
        raise DecodeError(SCHEMA, f"input {wire.name!r} has {data.size} values for shape {wire.shape}")
    if not np.isfinite(data).all():
        raise DecodeError(NON_FINITE, f"input {wire.name!r} holds a number out of float64 range")
    return Tensor(wire.name, tuple(wire.shape), data)


def _decode_one(value: bytes | None, max_bytes: int, max_rows: int) -> tuple[WireRequest, tuple[Tensor, ...] | None]:
    raw = checked(value, max_bytes)
    try:
        wire = _request_decoder.decode(raw)
    except DECODE_ERRORS as exc:
        raise translate(exc) from None
    has_features = wire.features is not msgspec.UNSET
    has_inputs = wire.inputs is not msgspec.UNSET
    if has_features == has_inputs:
        raise DecodeError(SCHEMA, "a request needs exactly one of 'features' or 'inputs'")
    if has_features:
        return wire, None
    if not wire.inputs:
        raise DecodeError(SCHEMA, "'inputs' is empty")
    return wire, tuple(_tensor(t, max_rows) for t in wire.inputs)  # type: ignore[union-attr]


@dataclass(slots=True)
class DecodedRequests:
    """The requests of a batch that decoded, and why the others did not.

    ``rows[i]`` is the batch row of ``wires[i]`` (ascending); ``tensors`` maps ``i`` to the decoded inputs of
    an OIP request (absent for a JSON request, whose ``wires[i].features`` is set); ``errors`` maps a batch row
    to its dead-letter reason. Every row of the batch is in exactly one of ``rows`` and ``errors``. ``plain``:
    every request is JSON with numbers only (``PlainRequest``), so features need no per-value check. ``typed``:
    the features are ``typed_decoder(typed)`` structs (every request has exactly these features, as numbers),
    not mappings.
    """

    rows: list[int]
    wires: list[WireRequest] | list[PlainRequest] | list[Any]
    tensors: dict[int, tuple[Tensor, ...]] = field(default_factory=dict)
    errors: dict[int, DecodeError] = field(default_factory=dict)
    plain: bool = False
    typed: tuple[str, ...] | None = None


_inputs_of = operator.attrgetter("inputs")


def decode_requests(
    values: Sequence[bytes | None],
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    features: tuple[str, ...] | None = None,
) -> DecodedRequests:
    """Decode a batch of request values (contract section 2), each on its own; bad rows are reported, not raised.

    ``features``: the features of the model most requests are expected to name (the default one); a batch
    whose every request has exactly these, as numbers, is decoded by ``typed_decoder``."""
    decode = _request_decoder.decode
    unset = msgspec.UNSET
    if values and None not in values and max(map(len, values)) <= max_bytes and b"".join(values).isascii():
        # The common batch -- ASCII JSON requests with numeric "features", within the limit -- in C-level passes.
        # ``b"".join(...).isascii()`` copies the batch once and scans it in C: measured faster than a
        # ``bytes.isascii`` call per value (0.21 against 0.33 ms for 10,000 requests).
        if features is not None:
            try:
                typed = list(map(typed_decoder(features).decode, values))
            except DECODE_ERRORS:
                typed = None
            if typed is not None and list(map(_inputs_of, typed)).count(unset) == len(typed):
                return DecodedRequests(list(range(len(values))), typed, plain=True, typed=features)
        try:
            plain = list(map(_plain_decoder.decode, values))
        except DECODE_ERRORS:
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
        except DECODE_ERRORS as exc:
            errors[row] = translate(exc)
            continue
        except DecodeError as exc:
            errors[row] = exc
            continue
        if inputs is not None:
            tensors[len(wires)] = inputs
        rows.append(row)
        wires.append(wire)
    return decoded
