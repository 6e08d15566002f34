from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.envelope import decode_request
from streamer.core.features import RowSpan, build_matrix

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


def bodies(*values: object) -> list:
    return [decode_request(json.dumps(v).encode()) for v in values]


def reasons(batch) -> list[tuple[int, str]]:
    return [(p, e.reason) for p, e in batch.errors]


def test_rows_follow_the_card_order_and_extra_features_are_ignored() -> None:
    batch = build_matrix(CARD, bodies({"features": {"country": "FR", "b": 2, "a": 1, "zzz": 9}}))
    assert batch.matrix.dtype == np.float32
    np.testing.assert_array_equal(batch.matrix, [[1, 2, 1]])
    assert batch.spans == [RowSpan(0, 0, 1)]


def test_a_bad_row_never_fails_its_batch_mates() -> None:
    batch = build_matrix(
        CARD,
        bodies(
            {"features": {"a": 1, "b": 2, "country": "US"}},
            {"features": {"a": 1, "country": "US"}},
            {"features": {"a": None, "b": 2, "country": "US"}},
            {"features": {"a": "x", "b": 2, "country": "US"}},
            {"features": {"a": 1, "b": 2, "country": "DE"}},
            {"features": {"a": 1e39, "b": 2, "country": "US"}},
            {"features": {"a": 5, "b": 6, "country": "FR"}},
        ),
    )
    np.testing.assert_array_equal(batch.matrix, [[1, 2, 0], [5, 6, 1]])
    assert batch.spans == [RowSpan(0, 0, 1), RowSpan(6, 1, 2)]
    assert reasons(batch) == [(1, "schema"), (2, "non-finite"), (3, "schema"), (4, "schema"), (5, "non-finite")]


def test_missing_values_become_nan_when_the_card_allows_them() -> None:
    card = replace(CARD, allow_missing=True)
    batch = build_matrix(card, bodies({"features": {"a": None, "b": 2, "country": "DE"}}))
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
    batch = build_matrix(CARD, bodies({"features": {"a": 9, "b": 9, "country": "US"}}, one_tensor, per_feature))
    np.testing.assert_array_equal(batch.matrix, [[9, 9, 0], [1, 2, 0], [3, 4, 1], [1, 2, 0], [3, 4, 1]])
    assert batch.spans == [RowSpan(0, 0, 1), RowSpan(1, 1, 3), RowSpan(2, 3, 5)]


def test_oip_shape_errors_are_schema_dead_letters() -> None:
    wrong_width = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    missing_feature = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    batch = build_matrix(CARD, bodies(wrong_width, missing_feature))
    assert reasons(batch) == [(0, "schema"), (1, "schema")]
    assert batch.matrix.shape == (0, 3)


@pytest.mark.parametrize("n", [0, 1, 100])
def test_spans_tile_the_matrix(n: int) -> None:
    batch = build_matrix(CARD, bodies(*[{"features": {"a": i, "b": -i, "country": "US"}} for i in range(n)]))
    assert batch.matrix.shape == (n, 3)
    assert [(s.start, s.stop) for s in batch.spans] == [(i, i + 1) for i in range(n)]
