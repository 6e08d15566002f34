"""Routing, the scoring graph and batch scoring with a fake inference function (the Scorer contract)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import DecodeError, ScoringError
from streamer.core.graph import ModelStage, ScoringGraph
from streamer.core.routing import Catalog
from streamer.core.scoring import Request, score_batch
from streamer.core.types import SourceRef

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


def req(offset: int, value: object, header: str | None = None) -> Request:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Request(SourceRef("requests", 2, offset), raw, header, 1000)


def test_a_batch_gives_one_outcome_per_message_in_order() -> None:
    outcomes = score_batch(
        [
            req(10, {"id": "x", "features": {"a": 1, "b": 2}}),
            req(11, b"garbage"),
            req(12, {"features": {"a": 0.5}, "model": "price"}),
            req(13, {"features": {"a": -5, "b": 0}}, header="fraud@1"),
            req(14, {"features": {"a": 1, "b": 1}, "model": "fraud@9"}),
        ],
        CATALOG,
        fake_infer,
    )
    assert [o.source.offset for o in outcomes] == [10, 11, 12, 13, 14]
    first = outcomes[0].body
    assert first is not None
    assert (first["id"], first["model"], first["version"], first["label"]) == ("x", "fraud", "2", 1)
    assert first["score"] == pytest.approx(1 / (1 + np.exp(-3)), rel=1e-6)
    assert first["outputs"]["probabilities"][1] == pytest.approx(first["score"])
    assert first["source"] == {"topic": "requests", "partition": 2, "offset": 10}
    assert outcomes[1].error is not None and outcomes[1].error.reason == "invalid-json"
    regression = outcomes[2].body
    assert regression is not None and regression["score"] == pytest.approx(1.5) and regression["label"] is None
    assert regression["id"] == "requests:2:12"
    assert outcomes[3].body is not None and outcomes[3].body["version"] == "1" and outcomes[3].body["label"] == 0
    assert outcomes[4].error is not None and outcomes[4].error.reason == "unknown-model"


def test_a_failing_model_fails_only_its_own_rows() -> None:
    def infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        if card.name == "price":
            raise ScoringError("runtime exploded")
        return fake_infer(card, x)

    outcomes = score_batch(
        [req(1, {"features": {"a": 1}, "model": "price"}), req(2, {"features": {"a": 1, "b": 1}})], CATALOG, infer
    )
    assert outcomes[0].error is not None and outcomes[0].error.reason == "scoring-failed"
    assert outcomes[1].body is not None


def test_rows_out_must_equal_rows_in() -> None:
    def short(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[:-1] for k, v in fake_infer(card, x).items()}

    outcomes = score_batch(
        [req(1, {"features": {"a": 1, "b": 1}}), req(2, {"features": {"a": 2, "b": 1}})], CATALOG, short
    )
    assert [o.error.reason for o in outcomes if o.error] == ["scoring-failed", "scoring-failed"]


def test_a_non_finite_score_is_scoring_failed_for_that_row_only() -> None:
    def nan_for_big(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
        out = fake_infer(card, x)
        out["probabilities"][x[:, 0] > 100, 1] = np.nan
        return out

    outcomes = score_batch(
        [req(1, {"features": {"a": 1000, "b": 1}}), req(2, {"features": {"a": 2, "b": 1}})], CATALOG, nan_for_big
    )
    assert outcomes[0].error is not None and outcomes[0].error.reason == "scoring-failed"
    assert outcomes[1].body is not None


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
