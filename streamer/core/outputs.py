"""THE declaration of the prediction envelope (contract section 3; the shadow topic's too), and its encoders.

``Prediction`` lists every field in wire order, with its type and, in its ``Meta``, what the rest of the code
derives from it: ``rows`` (one value per scored row, as ``GraphResult`` carries it: an OIP request gets an
array of them), ``oip`` (the datatype of the field's tensor in an Open Inference Protocol response), ``table``
(the column kind in a CSV or Parquet file of ``streamer batch``: ``string``, ``float64``, ``int64``, ``bool``,
or ``json`` for its JSON text) and ``topic`` (required on the predictions topic though absent from offline
files: ``latency_ms``). Nothing else spells the envelope:

- the worker's bulk encoder (``encode_single_predictions``) generates its bytes template from the field order;
- the general encoder (``open_bodies``: OIP requests, several rows each) encodes ``Prediction`` structs;
- the OIP response, the client, ``streamer batch``'s table writer and the tests read it through this struct
  (``decode``) or its field list (``FIELDS``);
- ``schemas/prediction.schema.json`` is generated from it (``tests/wire_schemas.py``; a test fails when they
  differ), and a test holds the bulk encoder's bytes equal to msgspec's encoding of the struct.

Invariants: a prediction's bytes are ``msgspec.json.encode(Prediction(...))``, fields in declaration order,
``decision`` and ``reasons`` only when a graph's rules decided, ``enrichment`` only when a graph enriched, ``label``
always (``null`` for a regressor).
``latency_ms`` is the last field: it is measured when the prediction is produced, so the scoring path hands on
*open* bodies (without it and the closing brace) and ``finish_predictions`` closes a batch of them at once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec import UNSET, Meta, UnsetType


def _meta(
    description: str,
    *,
    rows: bool = False,
    oip: str | None = None,
    table: str | None = None,
    topic: bool = False,
    **constraints: Any,
) -> Meta:
    """A field's description (it goes into the JSON Schema) and what is derived from the field (module doc)."""
    extra = {"rows": rows, "oip": oip, "table": table, "topic": topic}
    return Meta(description=description, extra=extra, **constraints)


# Where a graph's entity features came from, per row, best first (``core.graph.stages`` derives its names from it).
EnrichmentOutcome = Literal["store", "missing", "failed"]


class Source(msgspec.Struct, frozen=True):
    """Where the request was read: its topic, partition and offset."""

    topic: str
    partition: Annotated[int, Meta(ge=0)]
    offset: Annotated[int, Meta(ge=0)]


class Prediction(msgspec.Struct, kw_only=True):
    """The value of a message on the predictions topic, keyed byte for byte like its request. For an Open Inference
    Protocol v2 request, score, label, decision, reasons and each output are arrays with one item per row."""

    id: Annotated[str, _meta("the request's id: its own, or <topic>:<partition>:<offset>", table="string")]
    model: Annotated[str, _meta("the model or graph that scored it", table="string")]
    version: Annotated[
        str, _meta("the version that scored it (a string of digits)", table="string", pattern="^[1-9][0-9]*$")
    ]
    score: Annotated[
        float | list[float], _meta("the value the card's [outputs] score reads", rows=True, oip="FP64", table="float64")
    ]
    label: Annotated[
        int | list[int] | None,
        _meta(
            "the value the card's [outputs] label reads; null when it names none", rows=True, oip="INT64", table="int64"
        ),
    ]
    outputs: Annotated[dict[str, Any], _meta("every output of the model (or graph) by name", rows=True, table="json")]
    decision: (
        Annotated[str | list[str], _meta("what a graph's rules decided", rows=True, oip="BYTES", table="string")]
        | UnsetType
    ) = UNSET
    reasons: (
        Annotated[list[str | list[str]], _meta("why the rules decided so", rows=True, oip="BYTES", table="json")]
        | UnsetType
    ) = UNSET
    enrichment: (
        Annotated[
            EnrichmentOutcome | list[EnrichmentOutcome],
            _meta(
                "where a graph's entity features came from: store (read), missing (no such entity, or no key: its "
                "defaults), failed (the feature store did not answer: its defaults, and the graph's on_failure "
                "applied); the worst over the graph's enrich stages",
                rows=True,
                oip="BYTES",
                table="string",
            ),
        ]
        | UnsetType
    ) = UNSET
    source: Annotated[Source, _meta("the request's coordinates")]
    latency_ms: (
        Annotated[float, _meta("from the request's Kafka timestamp to the prediction's production", topic=True)]
        | UnsetType
    ) = UNSET


@dataclass(frozen=True, slots=True)
class Field:
    """One field of ``Prediction`` and what its ``Meta`` says about it (see the module docstring)."""

    name: str
    required: bool
    rows: bool
    oip: str | None
    table: str | None
    topic: bool


def _fields() -> tuple[Field, ...]:
    found = []
    for info in msgspec.inspect.type_info(Prediction).fields:  # type: ignore[attr-defined]
        kind = info.type
        extra = kind.extra if isinstance(kind, msgspec.inspect.Metadata) and kind.extra else {}
        found.append(Field(info.name, info.required, **extra))
    return tuple(found)


FIELDS = _fields()
FIELD = {f.name: f for f in FIELDS}
ROW_FIELDS = tuple(f.name for f in FIELDS if f.rows)
TABLE_FIELDS = tuple(f for f in FIELDS if f.table is not None)
CLOSING = FIELDS[-1].name  # latency_ms, written when the prediction is produced
OPTIONAL_ROW_FIELDS = frozenset(f.name for f in FIELDS if f.rows and not f.required)

_ROW_SET = frozenset(ROW_FIELDS)
# The fields that take per-row slots in the bulk encoder's template, in the declaration's order.
_SLOT_ORDER = tuple(f.name for f in FIELDS if f.rows or f.name in ("id", "source"))

decode = msgspec.json.Decoder(Prediction).decode
_encoder = msgspec.json.Encoder()


# ------------------------------------------------------------------------------------------------ per-row fields


def result_fields(result: Any) -> dict[str, Any]:
    """The per-row fields of a model's result (a ``GraphResult``, whose attributes are named like the fields:
    a test holds the two lists equal), as the result holds them."""
    return {name: getattr(result, name) for name in ROW_FIELDS}


def row_columns(result: Any) -> dict[str, Any]:
    """The per-row fields of a model's result as Python lists, one conversion per column: numpy arrays become
    lists, a dict of them (``outputs``) a dict of lists; a list (a rules stage's) or None stays as it is."""
    columns: dict[str, Any] = {}
    for name in ROW_FIELDS:
        value = getattr(result, name)
        if type(value) is dict:
            value = {key: _listed(column) for key, column in value.items()}
        elif value is not None and type(value) is not list:
            value = value.tolist()
        columns[name] = value
    return columns


def _listed(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def request_fields(columns: Mapping[str, Any], start: int, stop: int, arrays: bool) -> dict[str, Any]:
    """One request's per-row fields out of ``row_columns``: its rows ``[start, stop)`` as arrays (an OIP
    request, however many rows), or the single row ``start`` as plain values. An absent optional field stays
    absent; an absent required one (a regressor's label) is null."""
    picked: dict[str, Any] = {}
    for name, value in columns.items():
        if value is None:
            if name not in OPTIONAL_ROW_FIELDS:
                picked[name] = None
        elif isinstance(value, dict):
            picked[name] = {key: v[start:stop] if arrays else v[start] for key, v in value.items()}
        else:
            picked[name] = value[start:stop] if arrays else value[start]
    return picked


# ------------------------------------------------------------------------------------------------ encoding


def _json_lines(values: Sequence[Any]) -> list[bytes]:
    """Each value's JSON, from one encoder call (newline-delimited output: JSON strings always escape newlines)."""
    lines = _encoder.encode_lines(values).split(b"\n")
    lines.pop()  # the output ends with a newline
    return lines


def _constant(value: object) -> bytes:
    """JSON of a constant part of a template, with ``%`` escaped for bytes formatting."""
    return _encoder.encode(value).replace(b"%", b"%%")


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a template takes a per-row value: ``%s`` (its JSON, encoded a column at a time) or ``%d``."""

    text: bytes


_SLOT, _INT_SLOT = _Slot(b"%s"), _Slot(b"%d")


def _array_slot(width: int) -> _Slot:
    """A row of a 2-D numeric column: a JSON array of ``width`` slots, each filled from one column of it."""
    return _Slot(b"[" + b",".join([b"%s"] * width) + b"]")


def _object(members: Mapping[str, Any]) -> bytes:
    """The bytes template of one JSON object: ``members`` in their order (a ``_Slot``; a dict: a nested object;
    anything else: a constant). ``%`` in names and constants is escaped."""
    parts = []
    for name, member in members.items():
        if isinstance(member, _Slot):
            text = member.text
        elif isinstance(member, dict):
            text = b"{" + _object(member) + b"}"
        else:
            text = _constant(member)
        parts.append(_constant(name) + b":" + text)
    return b",".join(parts)


_ABSENT, _VALUE, _ARRAY = "absent", "value", "array"  # what a per-row field holds, in a template's shape
Kind = str | tuple[str, int]


@functools.lru_cache(maxsize=4096)
def _single_template(model: str, version: str, topic: str, partition: int, shape: tuple[tuple[str, Any], ...]) -> bytes:
    """The open template of a one-row prediction, generated from the declaration and kept per distinct shape.

    ``shape``: each per-row field, in declaration order, with what it holds: ``_ABSENT`` (null for a required
    field, absent for an optional one), a column's kind (``_VALUE``: one value per row; ``(_ARRAY, k)``: a 2-D
    numeric array, each row a JSON array of k numbers), or a mapping's columns (``outputs``) as (name, kind)
    pairs. Kinds are strings, never bools or ints: the cache must not take ``(_ARRAY, 1)`` for ``True``."""
    members: dict[str, Any] = {"id": _SLOT, "model": model, "version": version}
    for name, kind in shape:
        if kind == _ABSENT:
            if name not in OPTIONAL_ROW_FIELDS:
                members[name] = None
        elif kind == _VALUE or (kind and kind[0] == _ARRAY):
            members[name] = _column_slot(kind)
        else:
            members[name] = {key: _column_slot(column) for key, column in kind}
    source = {"topic": topic, "partition": partition, "offset": _INT_SLOT}
    members["source"] = {name: source[name] for name in Source.__struct_fields__}
    missing = [f.name for f in FIELDS if f.required and f.name not in members]
    if missing or not set(members) <= set(FIELD):
        raise ValueError(f"the prediction's fields {sorted(members)} do not match the declaration (missing {missing})")
    return b"{" + _object({f.name: members[f.name] for f in FIELDS if f.name in members})


def _column_slot(kind: Kind) -> _Slot:
    return _SLOT if kind == _VALUE else _array_slot(kind[1])


def _json_column(value: Any) -> tuple[Kind, list[list[bytes]]]:
    """A per-row column's kind in the template and its JSON text, one list per slot.

    A 2-D numeric array (a model's class probabilities) takes one slot per column of it, each encoded a column
    at a time: no Python list per row. Anything else is one slot, each row's value encoded by msgspec (a list, a
    dict, a string)."""
    if type(value) is np.ndarray and value.ndim == 2 and value.dtype.kind in "biuf":
        return (_ARRAY, value.shape[1]), [_json_lines(value[:, k].tolist()) for k in range(value.shape[1])]
    return _VALUE, [_json_lines(value.tolist() if isinstance(value, np.ndarray) else value)]


def encode_single_predictions(
    ids: Sequence[str],
    model: str,
    version: str,
    rows: Mapping[str, Any],
    topic: str,
    partition: int,
    offsets: Sequence[int],
) -> list[bytes]:
    """The open bodies of one-row predictions of one model version, a column at a time.

    ``rows``: the per-row fields (one item per prediction), as the model's result holds them (``result_fields``:
    numpy arrays, a dict of them for ``outputs``) or as lists (``row_columns``). The bytes template is generated
    from the declaration's field order (once per shape, then cached) and formatted once per row: the same bytes
    as ``open_bodies`` of the same ``Prediction`` structs (a property test holds them equal), without a Python
    object per row. Raises ``ValueError`` when a required field has no value.
    """
    if not ids:
        return []
    if not rows.keys() <= _ROW_SET:
        raise ValueError(f"no per-row field {sorted(rows.keys() - _ROW_SET)} in the declaration")
    shape: list[tuple[str, Any]] = []
    columns: dict[str, list[Sequence[Any]]] = {"id": [_json_lines(ids)], "source": [offsets]}
    for name in ROW_FIELDS:
        value = rows.get(name)
        if value is None:
            shape.append((name, _ABSENT))
        elif type(value) is dict:
            kinds, texts = [], []
            for key, column in value.items():
                kind, text = _json_column(column)
                kinds.append((key, kind))
                texts += text
            shape.append((name, tuple(kinds)))
            columns[name] = texts
        else:
            kind, columns[name] = _json_column(value)
            shape.append((name, kind))
    template = _single_template(model, version, topic, partition, tuple(shape))
    ordered = [column for name in _SLOT_ORDER for column in columns.get(name, ())]
    return [template % row for row in zip(*ordered, strict=True)]


def open_bodies(predictions: Sequence[Prediction]) -> list[bytes]:
    """Each prediction's JSON without its closing brace (``finish_predictions`` adds ``latency_ms`` and it), from
    one encoder call. ``latency_ms`` must be unset."""
    if not predictions:
        return []
    return [line[:-1] for line in _json_lines(predictions)]


_CLOSING_MEMBER = b"," + _encoder.encode(CLOSING) + b":"


def finish_predictions(
    open_bodies: Sequence[bytes], timestamps_ms: Sequence[int], now_ms: float
) -> tuple[list[bytes], np.ndarray]:
    """Close each open body with its ``latency_ms`` (from the request's Kafka timestamp to ``now_ms``).

    Returns the values and the latencies (milliseconds, rounded to microseconds), computed for the batch at once.
    The closing members are encoded in one call and cut apart in C, and each body is extended by one C-level
    concatenation: the body is not formatted a second time.
    """
    if len(open_bodies) != len(timestamps_ms):
        raise ValueError(f"{len(open_bodies)} bodies for {len(timestamps_ms)} timestamps")
    if not open_bodies:
        return [], np.empty(0)
    latencies = np.round(now_ms - np.asarray(timestamps_ms, dtype=np.float64), 3)
    texts = _encoder.encode_lines(latencies.tolist())  # b"4.1\n5.2\n": no JSON number holds a newline
    closings = (_CLOSING_MEMBER + texts[:-1].replace(b"\n", b"}\n" + _CLOSING_MEMBER) + b"}").split(b"\n")
    return list(map(bytes.__add__, open_bodies, closings)), latencies


def close_without_latency(open_bodies: Sequence[bytes]) -> bytes:
    """Open bodies as JSON lines without ``latency_ms`` (an offline file: no request timestamp to measure from)."""
    return b"}\n".join(open_bodies) + b"}\n" if open_bodies else b""


# ------------------------------------------------------------------------------------------------ tables


def table_columns(rows: Mapping[str, Any], size: int) -> dict[str, Any]:
    """The table columns (CSV, Parquet) of ``size`` rows' per-row fields (``result_fields`` of them): numbers
    and strings as they are, a ``json`` field as each row's JSON text (bytes), an absent field None."""
    columns: dict[str, Any] = {}
    for name, value in rows.items():
        kind = FIELD[name].table
        if kind is None:
            continue
        if value is None or kind != "json":
            columns[name] = value
        elif isinstance(value, dict):
            columns[name] = json_objects({key: _listed(column) for key, column in value.items()}, size)
        else:
            columns[name] = _json_lines(_listed(value))
    return columns


def json_objects(members: Mapping[str, Sequence[Any]], size: int) -> list[bytes]:
    """Row k's JSON object ``{name: members[name][k], ...}`` for every row, a column at a time."""
    if not members:
        return [b"{}"] * size
    template = b"{" + _object(dict.fromkeys(members, _SLOT)) + b"}"
    return [template % row for row in zip(*map(_json_lines, members.values()), strict=True)]
