"""The typed decoder is a shortcut, never a rule of its own.

``requests.typed_decoder(features)`` decodes the commonest request (exactly the default model's features, each a
number) into structs instead of dicts. On arbitrary request texts -- extra, missing and repeated features, nulls,
strings, booleans, integers, numbers beyond float64, a ``model`` or ``inputs`` member, other members, broken
JSON -- whatever it accepts the general decoder accepts with the same values, and a batch decoded with it gives
the same feature matrix, the same rows and the same dead letters as the same batch decoded without it.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core import requests
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.features import build_matrix
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records

FEATURES = ("a", "b", "c")
CARD = ModelCard("m", 1, "regression", FEATURES, "x", "0" * 64, OutputRef("y"), None)
OTHER = ModelCard("other", 1, "regression", ("a", "d"), "x", "0" * 64, OutputRef("y"), None)
CATALOG = Catalog({"m": {1: CARD}, "other": {1: OTHER}}, "m")

numbers = st.sampled_from(["1.5", "-2", "0", "3.4e39", "1e-320", "12345678901234567890"])
values = numbers | st.sampled_from(["1e999", "-1e999", "null", '"x"', "true", "[1]", "{}"])
names = st.sampled_from([*FEATURES, "d", "e"])


@st.composite
def request_texts(draw: st.DrawFn) -> bytes:
    """Mostly the common request (the three features as numbers, in any order), often with a twist."""
    pairs = [(name, draw(numbers)) for name in draw(st.permutations(FEATURES))]
    for _ in range(draw(st.integers(0, 2))):  # a twist: another feature, a repeated one, another value
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(names), draw(values)))
    if draw(st.integers(0, 9)) == 0:
        del pairs[draw(st.integers(0, len(pairs) - 1))]
    members = [f'"{name}": {value}' for name, value in pairs]
    body = [f'"features": {{{", ".join(members)}}}']
    if draw(st.booleans()):
        body.append(f'"id": "{draw(st.sampled_from(["r1", "", "r-2"]))}"')
    extra = draw(st.sampled_from(["", '"model": "m"', '"model": "other"', '"model": null', '"inputs": []', '"x": 1']))
    if extra:
        body.insert(draw(st.integers(0, len(body))), extra)
    text = "{" + ", ".join(body) + "}"
    return (text + draw(st.sampled_from(["", "", "", " ", "}", "x"]))).encode()


@given(request_texts())
def test_what_the_typed_decoder_accepts_the_general_one_accepts_alike(text: bytes) -> None:
    try:
        typed = requests.typed_decoder(FEATURES).decode(text)
    except requests.DECODE_ERRORS:
        return
    plain = requests._plain_decoder.decode(text)  # the general rules' first decoder
    assert set(plain.features) == set(FEATURES)
    for k, name in enumerate(FEATURES):
        assert getattr(typed.features, requests.feature_field(k)) == plain.features[name]
    assert (typed.id, typed.model, typed.inputs) == (plain.id, plain.model, plain.inputs)


@given(st.lists(request_texts(), min_size=1, max_size=8))
def test_a_batch_decodes_to_the_same_matrix_rows_and_dead_letters_with_or_without_it(texts: list[bytes]) -> None:
    typed = requests.decode_requests(texts, features=FEATURES)
    general = requests.decode_requests(texts)
    assert typed.rows == general.rows
    assert {row: (e.reason, e.detail) for row, e in typed.errors.items()} == {
        row: (e.reason, e.detail) for row, e in general.errors.items()
    }
    if typed.typed is None:
        return
    assert not general.tensors
    fast = build_matrix(CARD, [w.features for w in typed.wires], typed=True)
    slow = build_matrix(CARD, [w.features for w in general.wires], None, general.plain)
    assert np.array_equal(fast.matrix, slow.matrix) and fast.matrix.flags.c_contiguous
    assert fast.accepted == slow.accepted
    assert [(j, e.reason, e.detail) for j, e in fast.errors] == [(j, e.reason, e.detail) for j, e in slow.errors]


@given(st.lists(request_texts(), min_size=1, max_size=8))
def test_scoring_gives_every_row_the_outcome_of_the_general_rules(texts: list[bytes]) -> None:
    """Through ``score_records`` (which takes the typed shortcut for a batch bound for the default model only,
    and decodes again as mappings when a request names a model with other features)."""
    records = Records.of("t", 0, range(len(texts)), texts)

    def infer(card: ModelCard, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": matrix.astype(np.float64).sum(axis=1)}

    scored = score_records(records, CATALOG, infer)
    general = requests.decode_requests(texts)
    for row in range(len(texts)):
        if row in general.errors:
            assert scored.errors[row].reason == general.errors[row].reason
    answered = [row for row, body in enumerate(scored.bodies) if body is not None]
    assert sorted(answered + list(scored.errors)) == list(range(len(texts)))
