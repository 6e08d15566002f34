"""Fuzzing every reader of outside bytes: only the documented errors escape.

Requests (JSON and OIP tensors, with hostile keys and headers) through ``score_records`` and ``output_records``:
every row ends as a prediction body or a ``DecodeError`` with a documented reason, and the outputs build.
Feedback through ``decode_label``: a ``Label`` or a ``DecodeError``. Model cards through ``parse_card`` (on
arbitrary tables and on parses of mutated card text): a card or ``ModelError``. Graphs through ``parse_graph``:
a graph or ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tomllib
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core import requests
from streamer.core.cards import ModelCard, OutputRef, parse_card
from streamer.core.errors import DEAD_LETTER_REASONS, ConfigError, DecodeError, ModelError
from streamer.core.graph.spec import parse_graph
from streamer.core.headers import ERROR_HEADER
from streamer.core.labels import decode_label
from streamer.core.output_records import output_records
from streamer.core.routing import Catalog
from streamer.core.scoring import Limits, score_records
from streamer.core.types import Label, Records
from tests.conftest import REPO
from tests.fuzz import strategies as hs
from tests.wire import RequestBody, decode_request

CARD = ModelCard(
    "fraud", 1, "binary-classification", tuple(hs.FEATURES), "x", "0" * 64, OutputRef("probabilities", 1), None
)
MISSING_OK = replace(
    CARD, version=2, allow_missing=True, categorical={"hour": ("day", "night")}, label=OutputRef("label")
)
REGRESSOR = ModelCard("price", 3, "regression", ("a", "b"), "x", "0" * 64, OutputRef("variable"), None)
CATALOG = Catalog({"fraud": {1: CARD, 2: MISSING_OK}, "price": {3: REGRESSOR}}, default="fraud")


def fake_infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in for ONNX Runtime: p = sigmoid(sum of features) (NaN in, NaN out)."""
    if card.task == "regression":
        return {"variable": x.sum(axis=1, keepdims=True)}
    with np.errstate(all="ignore"):
        p = 1 / (1 + np.exp(-x.sum(axis=1)))
    return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}


def check_batch(messages: list[tuple[bytes | None, bytes | None, list | None]], limits: Limits) -> None:
    keys = [k for k, _, _ in messages]
    values = [v for _, v, _ in messages]
    headers = [h for _, _, h in messages]
    n = len(messages)
    records = Records.of("requests", 3, list(range(100, 100 + n)), values, keys, [1000] * n, headers)
    scored = score_records(records, CATALOG, fake_infer, limits)
    assert len(scored.bodies) == n
    for row, body in enumerate(scored.bodies):
        assert (body is None) == (row in scored.errors), row
        if body is None:
            error = scored.errors[row]
            assert isinstance(error, DecodeError) and error.reason in DEAD_LETTER_REASONS
        else:
            prediction = json.loads(body + b"}")
            assert prediction["source"] == {"topic": "requests", "partition": 3, "offset": 100 + row}
    out = output_records(scored, None, 2000.0, 1_048_576)
    assert len(out.predictions) + len(out.dead_letters) == n
    assert out.predictions.keys + out.dead_letters.keys == [
        keys[r] for r in [*(r for r in range(n) if scored.bodies[r] is not None), *sorted(scored.errors)]
    ]
    for value in out.predictions.values:
        assert json.loads(value)["latency_ms"] >= 0  # type: ignore[arg-type]
    for record_headers in out.dead_letters.headers:
        named = dict(record_headers)
        assert named[ERROR_HEADER].decode() in DEAD_LETTER_REASONS


message = st.tuples(hs.keys, hs.values, hs.headers)


@settings(max_examples=150)
@given(st.lists(message, min_size=1, max_size=6))
def test_hostile_request_batches_end_as_predictions_or_documented_dead_letters(messages: list) -> None:
    check_batch(messages, Limits())


@settings(max_examples=100)
@given(st.lists(st.tuples(hs.keys, hs.mutated_requests(), hs.headers), min_size=1, max_size=4))
def test_small_limits_turn_big_requests_and_predictions_into_too_large(messages: list) -> None:
    check_batch(messages, Limits(max_message_bytes=300, max_rows=2, max_output_bytes=1200))


@settings(max_examples=100)
@given(st.lists(st.tuples(st.none(), hs.values.filter(lambda v: v is not None and v.isascii()), st.none())))
def test_the_ascii_fast_path_agrees_with_the_slow_one(messages: list) -> None:
    """A batch of ASCII values takes the bulk path; each value alone must get the same outcome."""
    values = [v for _, v, _ in messages]
    together = requests.decode_requests(values)
    for row, value in enumerate(values):
        alone = requests.decode_requests([value])
        assert (row in together.errors) == bool(alone.errors), value
        if alone.errors:
            assert together.errors[row].reason == alone.errors[0].reason


def test_deep_nesting_where_the_decoder_skips_or_keeps_any_value_is_invalid_json() -> None:
    """Found by this fuzzer: msgspec raised ``RecursionError`` (not ``msgspec.DecodeError``) for a value nested
    ~1000 deep in an unknown field or in OIP ``data`` (typed ``Any``), which escaped ``decode_requests`` and so
    failed the whole batch in the worker."""
    deep = b"[" * 5000 + b"]" * 5000
    values = [
        b'{"features": {"amount": 1}, "extra": ' + deep + b"}",
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + deep + b"}]}",
        b'{"id": "r", "label": 1, "extra": ' + b'{"a":' * 3000 + b"0" + b"}" * 3000 + b"}",
    ]
    for batch in ([values[0]], values, [*values, b"\xff"]):
        decoded = requests.decode_requests(batch)
        assert not decoded.rows
        assert [decoded.errors[row].reason for row in range(min(len(batch), 3))] == ["invalid-json"] * min(
            len(batch), 3
        )
    for value in values:
        for decode in (decode_request, decode_label):
            try:
                decode(value)
            except DecodeError as exc:
                assert exc.reason == "invalid-json"
    check_batch([(b"k", v, None) for v in values], Limits())


@st.composite
def labels(draw: st.DrawFn) -> bytes:
    label: dict[str, Any] = {"id": "req-1", "label": 1, "model": "fraud"}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["id", "label", "model", "extra"]))
        if draw(st.booleans()):
            label.pop(key, None)
        else:
            label[key] = draw(hs.json_values)
    raw = json.dumps(label).encode()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"1e999", b"NaN", b"}", b", ", b"[" * 5000])) + raw[at:]
    return raw


@given(st.none() | st.binary(max_size=200) | labels())
def test_hostile_feedback_decodes_to_a_label_or_a_documented_dead_letter(raw: bytes | None) -> None:
    try:
        label = decode_label(raw)
    except DecodeError as exc:
        assert exc.reason in DEAD_LETTER_REASONS
        return
    assert isinstance(label, Label) and isinstance(label.id, str) and math.isfinite(label.label)


# ------------------------------------------------------------------------------------------------ cards

CARD_PATHS = sorted({*REPO.glob("models/*/*/card.toml"), *REPO.glob("examples/models/*/*/card.toml")})
CARD_TEXTS = [p.read_text() for p in CARD_PATHS]
CARD_TABLES = [tomllib.loads(t) for t in CARD_TEXTS]
toml_values = st.recursive(
    st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


def paths_of(table: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in nested tables and lists."""
    found = [prefix] if prefix else []
    if isinstance(table, dict):
        for k, v in table.items():
            found += paths_of(v, (*prefix, k))
    elif isinstance(table, list):
        for i, v in enumerate(table):
            found += paths_of(v, (*prefix, i))
    return found


@st.composite
def mutated_tables(draw: st.DrawFn, tables: list[dict[str, Any]]) -> dict[str, Any]:
    """A real table with values deleted or replaced anywhere in it (nested tables and lists too)."""
    table = copy.deepcopy(draw(st.sampled_from(tables)))
    for _ in range(draw(st.integers(1, 4))):
        paths = paths_of(table)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = table
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(toml_values)
    return table


def check_card(table: Any) -> None:
    try:
        card = parse_card(table, "card.toml")
    except ModelError:
        return
    assert isinstance(card, ModelCard)


card_keys = st.sampled_from(["name", "version", "task", "features", "input", "sha256", "outputs", "threshold"])


@given(st.dictionaries(card_keys | st.text(max_size=10), toml_values, max_size=8))
def test_arbitrary_tables_are_a_card_or_a_model_error(table: dict[str, Any]) -> None:
    """Any table (what ``tomllib`` returns at the top: always a table) is a card or a ``ModelError``."""
    check_card(table)


@given(mutated_tables(CARD_TABLES))
def test_mutated_cards_are_a_card_or_a_model_error(table: dict[str, Any]) -> None:
    check_card(table)


@given(st.sampled_from(CARD_TEXTS), st.data())
def test_mutated_card_text_that_parses_is_a_card_or_a_model_error(text: str, data: st.DataObject) -> None:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        op = data.draw(st.sampled_from(["drop", "dup", "edit"]))
        if op == "drop" and lines:
            del lines[at]
        elif op == "dup" and lines:
            lines.insert(at, lines[at])
        elif lines:
            line = lines[at]
            cut = data.draw(st.integers(0, len(line)))
            lines[at] = line[:cut] + data.draw(st.sampled_from(["", "0", "-1", "nan", "inf", '"x"', "[]", "{}"]))
    try:
        table = tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError:
        return  # the repository turns this into ModelError (adapters.model_repository)
    check_card(table)


# ------------------------------------------------------------------------------------------------ graphs

GRAPH_TABLES = [tomllib.loads(p.read_text()) for p in sorted((REPO / "examples" / "graphs").glob("*.toml"))]


@given(mutated_tables(GRAPH_TABLES) | st.dictionaries(st.text(max_size=8), toml_values, max_size=6))
def test_mutated_graphs_are_a_graph_or_a_config_error(table: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse_graph(table, "graph.toml")


def test_the_seeds_are_valid() -> None:
    """The mutations start from real, valid inputs (else the fuzzers would only exercise the first check)."""
    assert len(CARD_TABLES) >= 3 and len(GRAPH_TABLES) >= 2
    for path, table in zip(CARD_PATHS, CARD_TABLES, strict=True):
        parse_card(table, str(path))
    for table in GRAPH_TABLES:
        parse_graph(table, "graph.toml")
    assert isinstance(decode_request(json.dumps(hs.VALID).encode()), RequestBody)
    assert decode_request(json.dumps(hs.OIP).encode()).is_oip


def test_a_list_where_a_graph_names_a_stage_or_an_op_is_a_config_error() -> None:
    """Found by this fuzzer: ``output = []`` and ``op = []`` raised ``TypeError`` (unhashable) in a membership
    test, instead of the ``ConfigError`` that names the setting."""
    for table in GRAPH_TABLES:
        broken = copy.deepcopy(table)
        broken["output"] = []
        with pytest.raises(ConfigError, match="output must name"):
            parse_graph(broken, "graph.toml")
    graphs = [t for t in GRAPH_TABLES if any(s.get("kind") == "transform" for s in t["stages"].values())]
    assert graphs
    for graph in graphs:
        broken = copy.deepcopy(graph)
        transform = next(s for s in broken["stages"].values() if s.get("kind") == "transform")
        transform["ops"][0]["op"] = ["ratio"]
        with pytest.raises(ConfigError, match="is not one of"):
            parse_graph(broken, "graph.toml")
