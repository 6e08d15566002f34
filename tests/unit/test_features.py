from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.features import FeatureBatch, build_matrix
from streamer.core.requests import decode_requests

CARD = ModelCard(
    name="m",
    version=1,
    task="binary-classification",
    features=("a", "b", "country"),
    input="x",
    sha256="0" * 64,
    score=OutputRef("probabilities", 1),
    label=OutputRef("label"),
    categorical={"country": ("US", "FR")},
)


def matrix_of(card: ModelCard, *values: object) -> FeatureBatch:
    """Decode the request values as the worker does and build the card's matrix from them."""
    decoded = decode_requests([json.dumps(v).encode() for v in values])
    assert not decoded.errors
    features = [None if i in decoded.tensors else w.features for i, w in enumerate(decoded.wires)]
    return build_matrix(card, features, decoded.tensors)


def reasons(batch: FeatureBatch) -> list[tuple[int, str]]:
    return [(p, e.reason) for p, e in batch.errors]


def spans(batch: FeatureBatch) -> list[tuple[int, int, int]]:
    return [(position, *batch.rows_of(j)) for j, position in enumerate(batch.accepted)]


def test_rows_follow_the_card_order_and_extra_features_are_ignored() -> None:
    batch = matrix_of(CARD, {"features": {"country": "FR", "b": 2, "a": 1, "zzz": 9}})
    assert batch.matrix.dtype == np.float32
    np.testing.assert_array_equal(batch.matrix, [[1, 2, 1]])
    assert spans(batch) == [(0, 0, 1)]


def test_a_bad_row_never_fails_its_batch_mates() -> None:
    batch = matrix_of(
        CARD,
        {"features": {"a": 1, "b": 2, "country": "US"}},
        {"features": {"a": 1, "country": "US"}},
        {"features": {"a": None, "b": 2, "country": "US"}},
        {"features": {"a": "x", "b": 2, "country": "US"}},
        {"features": {"a": 1, "b": 2, "country": "DE"}},
        {"features": {"a": 1e39, "b": 2, "country": "US"}},
        {"features": {"a": 5, "b": 6, "country": "FR"}},
    )
    np.testing.assert_array_equal(batch.matrix, [[1, 2, 0], [5, 6, 1]])
    assert spans(batch) == [(0, 0, 1), (6, 1, 2)]
    assert reasons(batch) == [(1, "schema"), (2, "non-finite"), (3, "schema"), (4, "schema"), (5, "non-finite")]


def test_missing_values_become_nan_when_the_card_allows_them() -> None:
    card = replace(CARD, allow_missing=True)
    batch = matrix_of(card, {"features": {"a": None, "b": 2, "country": "DE"}})
    assert np.isnan(batch.matrix[0, 0]) and np.isnan(batch.matrix[0, 2]) and batch.matrix[0, 1] == 2
    assert batch.errors == []


def test_oip_requests_contribute_all_their_rows_in_either_layout() -> None:
    one_tensor = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 0, 3, 4, 1]}]}
    per_feature = {
        "inputs": [
            {"name": "country", "shape": [2], "datatype": "INT64", "data": [0, 1]},
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 3]},
            {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [[2], [4]]},
        ]
    }
    batch = matrix_of(CARD, {"features": {"a": 9, "b": 9, "country": "US"}}, one_tensor, per_feature)
    np.testing.assert_array_equal(batch.matrix, [[9, 9, 0], [1, 2, 0], [3, 4, 1], [1, 2, 0], [3, 4, 1]])
    assert spans(batch) == [(0, 0, 1), (1, 1, 3), (2, 3, 5)]


def test_oip_shape_errors_are_schema_dead_letters() -> None:
    wrong_width = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    missing_feature = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    batch = matrix_of(CARD, wrong_width, missing_feature)
    assert reasons(batch) == [(0, "schema"), (1, "schema")]
    assert batch.matrix.shape == (0, 3)


@pytest.mark.parametrize("n", [0, 1, 100])
def test_spans_tile_the_matrix(n: int) -> None:
    batch = matrix_of(CARD, *[{"features": {"a": i, "b": -i, "country": "US"}} for i in range(n)])
    assert batch.matrix.shape == (n, 3)
    assert spans(batch) == [(i, i, i + 1) for i in range(n)]
    assert batch.starts is None  # one row per request: no per-request bookkeeping


def test_a_string_that_looks_like_a_number_is_not_read_as_one() -> None:
    """numpy would parse "1.5" into 1.5: the fast path must not let it through."""
    card = replace(CARD, features=("a", "b"), categorical={})
    batch = matrix_of(card, {"features": {"a": "1.5", "b": 2}}, {"features": {"a": 1, "b": 2}})
    assert reasons(batch) == [(0, "schema")]
    np.testing.assert_array_equal(batch.matrix, [[1, 2]])


def test_a_single_feature_card_reads_scalars() -> None:
    card = replace(CARD, features=("a",), categorical={})
    batch = matrix_of(card, {"features": {"a": 3}}, {"features": {"a": 4, "b": "ignored"}})
    np.testing.assert_array_equal(batch.matrix, [[3], [4]])
