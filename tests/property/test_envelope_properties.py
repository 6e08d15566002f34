"""Envelope and feature invariants over arbitrary input."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core import labels, outputs
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import DEAD_LETTER_REASONS, DecodeError
from streamer.core.features import build_matrix
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Label, Records
from tests.wire import decode_request

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    for decode in (decode_request, labels.decode_label):
        try:
            decode(raw)
        except DecodeError as exc:
            assert exc.reason in DEAD_LETTER_REASONS


@given(json_values)
def test_arbitrary_json_raises_only_decode_error(value: object) -> None:
    raw = json.dumps(value).encode()
    for decode in (decode_request, labels.decode_label):
        try:
            decode(raw)
        except DecodeError as exc:
            assert exc.reason in DEAD_LETTER_REASONS


@given(st.integers(min_value=1, max_value=100_000))
def test_deep_nesting_is_a_decode_error_not_a_crash(depth: int) -> None:
    raw = b'{"features": ' + b"[" * depth + b"]" * depth + b"}"
    try:
        decode_request(raw)
    except DecodeError as exc:
        assert exc.reason in ("schema", "invalid-json")


finite = st.floats(allow_nan=False, allow_infinity=False)
scores = finite | st.lists(finite, max_size=5)
label_values = st.none() | st.integers(-(2**53), 2**53) | st.lists(st.integers(0, 9), max_size=5)
outputs_values = st.dictionaries(st.text(max_size=8), finite | st.lists(finite, max_size=3) | st.integers(), max_size=3)
sources = st.builds(outputs.Source, st.text(min_size=1, max_size=20), st.integers(0, 10_000), st.integers(0, 2**62))
unset = st.just(msgspec.UNSET)


@given(
    st.builds(
        outputs.Prediction,
        id=st.text(max_size=20),
        model=st.text(max_size=10),
        version=st.integers(1, 1000).map(str),
        score=scores,
        label=label_values,
        outputs=outputs_values,
        decision=unset | st.text(max_size=10),
        reasons=unset | st.lists(st.text(max_size=10), max_size=3),
        source=sources,
        latency_ms=unset | finite,
    )
)
def test_predictions_round_trip_through_the_declaration(prediction: outputs.Prediction) -> None:
    assert outputs.decode(msgspec.json.encode(prediction)) == prediction


def encode_label(label: Label) -> bytes:
    """The feedback envelope as a client writes it (contract section 4): a test oracle, not product code."""
    body: dict[str, object] = {"id": label.id, "label": label.label}
    if label.model is not None:
        body["model"] = label.model
    return msgspec.json.encode(body)


@given(st.builds(Label, st.text(max_size=20), finite, st.none() | st.text(max_size=10)))
def test_labels_round_trip(label: Label) -> None:
    assert labels.decode_label(encode_label(label)) == label


CARD = ModelCard("m", 1, "regression", ("a", "b"), "x", "0" * 64, OutputRef("y"), None)
feature_value = st.none() | st.floats(allow_nan=False) | st.text(max_size=3) | st.integers(-(10**40), 10**40)


def naive_reason(features: dict) -> str | None:
    """The per-value rules of ``features.py`` for CARD (no categorical features, no missing values allowed)."""
    for name in CARD.features:
        if name not in features:
            return "schema"
        value = features[name]
        if value is None:
            return "non-finite"
        if isinstance(value, str):
            return "schema"
    if any(abs(features[name]) > float(np.finfo(np.float32).max) for name in CARD.features):
        return "non-finite"
    return None


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), feature_value, max_size=3), max_size=30))
def test_every_request_is_either_a_row_or_an_error_as_the_naive_rules_say(rows: list[dict]) -> None:
    bodies = []
    for row in rows:
        try:
            bodies.append(decode_request(json.dumps({"features": row}).encode()))
        except DecodeError:
            continue
    batch = build_matrix(CARD, [b.features for b in bodies])
    positions = sorted(batch.accepted + [p for p, _ in batch.errors])
    assert positions == list(range(len(bodies)))
    assert batch.matrix.shape == (len(batch.accepted), 2) and batch.starts is None
    assert np.isfinite(batch.matrix).all()
    for j, position in enumerate(batch.accepted):
        features = bodies[position].features
        assert naive_reason(features) is None
        expected = [np.float32(features[name]) for name in CARD.features]
        assert list(batch.matrix[j]) == expected
        assert all(math.isfinite(v) for v in expected)
    for position, error in batch.errors:
        assert error.reason == naive_reason(bodies[position].features)


REGRESSOR_CATALOG = Catalog({"m": {1: CARD}})


def _double(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x.sum(axis=1)}


@given(st.lists(st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()), max_size=20))
def test_any_batch_of_values_scores_to_exactly_one_outcome_per_row(values: list[bytes]) -> None:
    records = Records.of("t", 0, range(len(values)), values)
    scored = score_records(records, REGRESSOR_CATALOG, _double)
    for row, body in enumerate(scored.bodies):
        assert (body is None) == (row in scored.errors)
        if body is not None:
            assert json.loads(body + b"}")["source"]["offset"] == row
        else:
            assert scored.errors[row].reason in DEAD_LETTER_REASONS
