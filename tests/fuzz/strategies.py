"""Hostile inputs for the fuzz tests: arbitrary bytes and structure-aware mutations of valid envelopes.

Shared by the hypothesis tests (``test_fuzz_inputs.py``) and the end-to-end corpus (``test_fuzz_corpus_e2e.py``,
which draws a fixed-seed corpus from the same strategies through ``corpus``).
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

from streamer.core.headers import MODEL_HEADER

FEATURES = ["amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.integers(max_value=-(2**63) + 2, min_value=-(2**70))
    | st.floats()  # NaN and +-inf: json.dumps spells them NaN / Infinity (not JSON)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

OIP_TYPES = ["FP32", "FP64", "INT64", "UINT8", "FP16", "BOOL", "BYTES", "fp32", ""]


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    """An OIP input tensor, often wrong: shape, datatype and data drawn independently."""
    shape = draw(
        st.sampled_from([[1, 6], [2, 6], [6], [0, 6], [1, 5], [2, 3, 1], [], [-1, 6], [10_001, 6]])
        | st.lists(st.integers(-3, 2**64), max_size=3)
    )
    data = draw(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=14)
        | st.just([[0.5] * 6, [1.0] * 6])
        | st.just([[0.5] * 6, [1.0] * 5])
        | json_values
    )
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["float_input", "x", ""]) | st.text(max_size=5)),
        "shape": shape,
        "datatype": draw(st.sampled_from(OIP_TYPES)),
        "data": data,
    }
    return tensor


@st.composite
def base_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A (mostly) valid request: JSON features or OIP inputs, with or without id and model."""
    request: dict[str, Any]
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from([*FEATURES, "a", "b", "other"]), max_size=8, unique=True))
        request = {"features": {n: draw(st.floats(-1e6, 1e6, allow_nan=False) | json_scalars) for n in names}}
    else:
        request = {"inputs": draw(st.lists(tensors(), min_size=1, max_size=2))}
    if draw(st.booleans()):
        request["id"] = draw(st.text(max_size=30) | json_scalars)
    if draw(st.booleans()):
        request["model"] = draw(
            st.sampled_from(["fraud", "fraud@1", "fraud@9", "price", "nope", "", "@"]) | json_scalars
        )
    return request


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A request, mutated in structure (fields deleted, retyped, nested) and then in bytes."""
    request = draw(base_requests())
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["delete", "retype", "nest", "add"]))
        keys = list(request)
        if op == "delete" and keys:
            del request[draw(st.sampled_from(keys))]
        elif op == "retype" and keys:
            request[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "nest" and keys:
            key = draw(st.sampled_from(keys))
            request[key] = {key: request[key]} if draw(st.booleans()) else [request[key]]
        else:
            request[draw(st.sampled_from(["features", "inputs", "id", "model", "extra"]))] = draw(json_values)
    text = json.dumps(request)  # NaN / Infinity tokens when a float is not finite
    byte_op = draw(
        st.sampled_from(["none", "none", "duplicate", "invalid-utf8", "deep", "long", "truncate", "splice", "bom"])
    )
    raw = text.encode()
    if byte_op == "duplicate" and raw.endswith(b"}") and len(raw) > 2:
        extra = draw(st.sampled_from([b'"features": {"amount": 1}', b'"inputs": []', b'"id": 5', b'"model": "x"']))
        raw = raw[:-1] + b", " + extra + b"}"
    elif byte_op == "invalid-utf8":
        at = draw(st.integers(0, len(raw)))
        raw = (
            raw[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf4\x90\x80\x80"]))
            + raw[at:]
        )
    elif byte_op == "deep":
        depth = draw(st.integers(100, 50_000))
        field, opener, closer = draw(
            st.sampled_from([("features", b"[", b"]"), ("extra", b"[", b"]"), ("extra", b'{"a":', b"}")])
        )
        raw = b'{"features": {"amount": 1}, "%s": ' % field.encode() + opener * depth + b"0" + closer * depth + b"}"
    elif byte_op == "long":
        raw = json.dumps({"features": {"amount": 1.0}, "id": "x" * draw(st.integers(1000, 1_100_000))}).encode()
    elif byte_op == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif byte_op == "splice":
        raw = raw + b", " + raw  # a value that closes its object and opens another
    elif byte_op == "bom":
        raw = b"\xef\xbb\xbf" + raw
    return raw


values = st.none() | st.binary(max_size=200) | mutated_requests()
keys = st.none() | st.just(b"") | st.binary(max_size=40) | st.binary(min_size=5000, max_size=5000)
header_values = st.none() | st.binary(max_size=30) | st.sampled_from([b"fraud", b"fraud@1", b"fraud@x", b"\xff\xfe"])
headers = st.none() | st.lists(
    st.tuples(st.sampled_from([MODEL_HEADER, "streamer-error", "x", ""]) | st.text(max_size=10), header_values),
    max_size=4,
)


VALID = {"features": dict(zip(FEATURES, [42.5, 13, 0.2, 5.0, 1, 900], strict=True))}
OIP = {"inputs": [{"name": "float_input", "shape": [2, 6], "datatype": "FP32", "data": [[1, 2, 3, 4, 5, 6]] * 2}]}
_HOSTILE = [None, True, -1, 2**64, 1e308, "x" * 5000, [], {}, [[[[]]]], {"a": {"b": None}}]
_BYTES = [b"\xff", b"\xc3(", b"NaN", b"Infinity", b"-Infinity", b"1e999", b"}", b"{", b"\x00", b"[" * 3000]


def _mutate(rng: random.Random, request: dict[str, Any]) -> bytes:
    request = json.loads(json.dumps(request))
    for _ in range(rng.randint(0, 3)):
        key = rng.choice(["features", "inputs", "id", "model", "extra"])
        op = rng.randrange(4)
        if op == 0:
            request.pop(key, None)
        elif op == 1:
            request[key] = rng.choice(_HOSTILE)
        elif op == 2 and key in request:
            request[key] = [request[key]]
        elif "features" in request and isinstance(request["features"], dict):
            request["features"][rng.choice([*FEATURES, "other"])] = rng.choice([*_HOSTILE, float("nan")])
    raw = json.dumps(request).encode()
    if rng.random() < 0.4:
        at = rng.randint(0, len(raw))
        raw = raw[:at] + rng.choice(_BYTES) + raw[at:]
    return raw


def corpus(count: int, seed: int) -> list[tuple[bytes | None, bytes | None, list | None]]:
    """A fixed corpus of (key, value, headers) of hostile messages, by a hand-rolled mutator seeded with ``seed``."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None, list | None]] = []
    for _ in range(count):
        kind = rng.randrange(10)
        if kind == 0:
            value: bytes | None = None
        elif kind == 1:
            value = rng.randbytes(rng.randint(0, 300))
        elif kind == 2:
            value = _mutate(rng, VALID) + b", " + _mutate(rng, VALID)
        elif kind == 3:
            deep = rng.choice([b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 3000 + b"0" + b"}" * 3000])
            field = rng.choice([b'"features"', b'"extra"', b'"id"'])
            value = b'{"features": {"amount": 1}, ' + field + b": " + deep + b"}"
        else:
            value = _mutate(rng, rng.choice([VALID, VALID, OIP]))
        key = rng.choice([None, b"", rng.randbytes(16), b"\xff" * 20_000, b"k%d" % rng.randrange(100)])
        headers = rng.choice(
            [
                None,
                [],
                [(MODEL_HEADER, rng.randbytes(rng.randint(0, 20)))],
                [(MODEL_HEADER, b"fraud@1"), ("x", None)],
                [(MODEL_HEADER, b"nope"), ("streamer-error", b"schema")],
                [("", b""), ("\u00e9", rng.randbytes(8))],
            ]
        )
        out.append((key, value, headers))
    return out
