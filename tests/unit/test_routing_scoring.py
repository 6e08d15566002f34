"""Routing, the scoring graph and batch scoring with a fake inference function (the Scorer contract)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import DecodeError, ScoringError
from streamer.core.graph.scoring_graph import ModelStage, ScoringGraph
from streamer.core.headers import model_header
from streamer.core.routing import Catalog
from streamer.core.scoring import Limits, outcome_counts, score_records
from streamer.core.types import Records

CARD = ModelCard(
    "fraud", 1, "binary-classification", ("a", "b"), "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label")
)
CARD2 = replace(CARD, version=2)
REGRESSOR = ModelCard("price", 3, "regression", ("a",), "x", "0" * 64, OutputRef("variable"), None)


def fake_infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    """A deterministic stand-in for ONNX Runtime: p = sigmoid(sum of features)."""
    if card.task == "regression":
        return {"variable": x.sum(axis=1, keepdims=True) * card.version}
    p = 1 / (1 + np.exp(-x.sum(axis=1)))
    return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}


CATALOG = Catalog({"fraud": {1: CARD, 2: CARD2}, "price": {3: REGRESSOR}}, default="fraud")


@pytest.mark.parametrize(
    ("requested", "ref"),
    [(None, "fraud@2"), ("", "fraud@2"), ("fraud", "fraud@2"), ("fraud@1", "fraud@1"), ("price", "price@3")],
)
def test_routing_resolves_names_versions_and_the_default(requested: str | None, ref: str) -> None:
    assert CATALOG.resolve(requested).ref == ref


def test_a_pin_overrides_the_highest_version_and_a_single_model_is_the_default() -> None:
    pinned = Catalog({"fraud": {1: CARD, 2: CARD2}}, pins={"fraud": 1})
    assert pinned.resolve(None).ref == "fraud@1"
    assert pinned.resolve("fraud@2").ref == "fraud@2"


@pytest.mark.parametrize("requested", ["nope", "fraud@3", "fraud@x", "fraud@", "@1"])
def test_unresolvable_models_are_unknown_model(requested: str) -> None:
    with pytest.raises(DecodeError) as raised:
        CATALOG.resolve(requested)
    assert raised.value.reason == "unknown-model"


def test_no_default_among_several_models_is_unknown_model() -> None:
    with pytest.raises(DecodeError, match="no default"):
        Catalog({"a": {1: CARD}, "b": {1: CARD}}).resolve(None)


Row = tuple[bytes | dict, str | None]  # a request value (JSON object or raw bytes), its streamer-model header


def score(rows: list[Row], infer=fake_infer, limits: Limits | None = None, first_offset: int = 10) -> list[dict]:
    """Score one batch of partition 2 and view each row as {"body": dict} or {"reason": str, "model": ...}."""
    values = [v if isinstance(v, bytes) else json.dumps(v).encode() for v, _ in rows]
    headers = [model_header(h) for _, h in rows]
    offsets = list(range(first_offset, first_offset + len(rows)))
    records = Records.of("requests", 2, offsets, values, headers=headers, timestamps_ms=[1000] * len(rows))
    scored = score_records(records, CATALOG, infer, limits or Limits())
    assert len(scored.bodies) == len(rows)
    view = []
    for row, body in enumerate(scored.bodies):
        assert (body is None) == (row in scored.errors)  # every row exactly one outcome
        if body is not None:
            view.append({"body": json.loads(body + b"}")})
        else:
            view.append({"reason": scored.errors[row].reason, "model": scored.error_models.get(row)})
    return view


def test_a_batch_gives_one_outcome_per_message_in_order() -> None:
    out = score(
        [
            ({"id": "x", "features": {"a": 1, "b": 2}}, None),
            (b"garbage", None),
            ({"features": {"a": 0.5}, "model": "price"}, None),
            ({"features": {"a": -5, "b": 0}}, "fraud@1"),
            ({"features": {"a": 1, "b": 1}, "model": "fraud@9"}, None),
            ({"features": {"a": 1, "b": 1}, "model": "fraud@1"}, "price"),  # the field wins over the header
        ]
    )
    first = out[0]["body"]
    assert (first["id"], first["model"], first["version"], first["label"]) == ("x", "fraud", "2", 1)
    assert first["score"] == pytest.approx(1 / (1 + np.exp(-3)), rel=1e-6)
    assert first["outputs"]["probabilities"][1] == pytest.approx(first["score"])
    assert first["source"] == {"topic": "requests", "partition": 2, "offset": 10}
    assert out[1] == {"reason": "invalid-json", "model": None}
    regression = out[2]["body"]
    assert regression["score"] == pytest.approx(1.5) and regression["label"] is None
    assert regression["id"] == "requests:2:12"
    assert out[3]["body"]["version"] == "1" and out[3]["body"]["label"] == 0
    assert out[4] == {"reason": "unknown-model", "model": None}
    assert out[5]["body"]["model"] == "fraud" and out[5]["body"]["version"] == "1"


def test_summaries_carry_the_columns_of_each_model_version() -> None:
    records = Records.of(
        "requests",
        0,
        [5, 6, 7, 8],
        [
            json.dumps({"id": "a", "features": {"a": 1, "b": 2}}).encode(),
            json.dumps({"id": "b", "features": {"a": 0.5}, "model": "price"}).encode(),
            json.dumps({"id": "c", "features": {"a": -1, "b": 0}}).encode(),
            json.dumps(
                {"id": "d", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 2, 2]}]}
            ).encode(),
        ],
    )
    scored = score_records(records, CATALOG, fake_infer)
    by_model = {m.card.ref: m for m in scored.models}
    fraud = by_model["fraud@2"]
    assert fraud.rows == [0, 2, 3]
    assert fraud.logged_ids == ["a", "c"] and fraud.logged_rows == [0, 2]  # the OIP request is not logged
    assert fraud.score_rows.tolist() == [0, 2, 3, 3]  # two rows of the OIP request
    assert fraud.logged_scores == pytest.approx(fraud.scores[:2].tolist())
    assert by_model["price@3"].rows == [1]
    counts, reasons = outcome_counts(scored, None)
    assert counts == {("fraud", "2", "prediction"): 3, ("price", "3", "prediction"): 1} and reasons == {}
    counts, _ = outcome_counts(scored, [2, 3])
    assert counts == {("fraud", "2", "prediction"): 2}


def test_a_failing_model_fails_only_its_own_rows() -> None:
    def infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        if card.name == "price":
            raise ScoringError("runtime exploded")
        return fake_infer(card, x)

    out = score([({"features": {"a": 1}, "model": "price"}, None), ({"features": {"a": 1, "b": 1}}, None)], infer)
    assert out[0] == {"reason": "scoring-failed", "model": "price@3"}
    assert "body" in out[1]


def test_rows_out_must_equal_rows_in() -> None:
    def short(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[:-1] for k, v in fake_infer(card, x).items()}

    out = score([({"features": {"a": 1, "b": 1}}, None), ({"features": {"a": 2, "b": 1}}, None)], short)
    assert [o["reason"] for o in out] == ["scoring-failed", "scoring-failed"]


def test_a_non_finite_score_is_scoring_failed_for_that_row_only() -> None:
    def nan_for_big(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        out = fake_infer(card, x)
        out["probabilities"][x[:, 0] > 100, 1] = np.nan
        return out

    out = score([({"features": {"a": 1000, "b": 1}}, None), ({"features": {"a": 2, "b": 1}}, None)], nan_for_big)
    assert out[0]["reason"] == "scoring-failed"
    assert "body" in out[1]


def test_a_prediction_over_the_output_limit_is_a_too_large_dead_letter() -> None:
    many = {"inputs": [{"name": "x", "shape": [500, 2], "datatype": "FP32", "data": [0.5] * 1000}]}
    out = score([(many, None), ({"features": {"a": 1, "b": 1}}, None)], limits=Limits(max_output_bytes=4096))
    assert out[0]["reason"] == "too-large"
    assert "body" in out[1]


def test_graph_stages_run_in_dependency_order() -> None:
    calls: list[str] = []

    def infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(card.ref)
        return fake_infer(card, x)

    graph = ScoringGraph(
        {"second": ModelStage("second", CARD2, after=("first",)), "first": ModelStage("first", CARD)}, head="second"
    )
    result = graph.run(np.zeros((3, 2), dtype=np.float32), infer)
    assert calls == ["fraud@1", "fraud@2"]
    assert result.score.shape == (3,) and result.label is not None and result.label.dtype == np.int64
