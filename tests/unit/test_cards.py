from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from streamer.core import calibration
from streamer.core.cards import GraphSignature, OutputRef, TensorInfo, check_signature, parse_card
from streamer.core.concept_drift import DetectorSpec, PageHinkleyParams
from streamer.core.errors import ModelError

CARD: dict[str, Any] = {
    "name": "fraud",
    "version": 3,
    "task": "binary-classification",
    "features": ["amount", "hour", "merchant_risk"],
    "input": "float_input",
    "sha256": "a" * 64,
    "outputs": {"score": "probabilities[:,1]", "label": "label"},
    "card": {"description": "d", "metrics": {"auc": 0.9}},
}
SIGNATURE = GraphSignature(
    inputs=(TensorInfo("float_input", (None, 3), "float"),),
    outputs=(TensorInfo("label", (None,), "int64"), TensorInfo("probabilities", (None, 2), "float")),
)


def with_(**changes: Any) -> dict[str, Any]:
    table = copy.deepcopy(CARD)
    for key, value in changes.items():
        if value is None:
            table.pop(key)
        else:
            table[key] = value
    return table


def test_a_valid_card_parses_into_typed_fields() -> None:
    card = parse_card(CARD, "card.toml")
    assert card.ref == "fraud@3"
    assert card.features == ("amount", "hour", "merchant_risk")
    assert card.score == OutputRef("probabilities", 1)
    assert card.label == OutputRef("label")
    assert card.threshold == 0.5 and not card.allow_missing and card.task != "regression"
    assert card.card["metrics"] == {"auc": 0.9}
    check_signature(card, SIGNATURE, "model.onnx")


def test_online_and_reference_tables_parse() -> None:
    card = parse_card(
        with_(
            online={"learner": "ftrl", "alpha": 0.3, "l2": 2},
            reference={"hour": {"edges": [6, 18], "fractions": [0.25, 0.5, 0.25]}},
        ),
        "card.toml",
    )
    assert card.online is not None and (card.online.alpha, card.online.beta, card.online.l2) == (0.3, 1.0, 2.0)
    assert card.online.rate_floor == 0.0  # no floor unless the card sets one
    floored = parse_card(with_(online={"learner": "ftrl", "alpha": 0.3, "rate_floor": 0.02}), "card.toml").online
    assert floored is not None and floored.rate_floor == 0.02
    calibrated = parse_card(with_(calibration={"rate_floor": 0.01}), "card.toml").calibration
    assert calibrated is not None and calibrated.params.rate_floor == 0.01
    assert card.reference["hour"].edges == (6.0, 18.0) and card.reference["hour"].fractions == (0.25, 0.5, 0.25)
    assert parse_card(CARD, "card.toml").online is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": None}, "missing required field 'name'"),
        ({"version": "3"}, "field 'version' has the wrong type"),
        ({"version": True}, "field 'version' has the wrong type"),
        ({"version": 0}, "positive integer"),
        ({"task": "ranking"}, "task 'ranking' is not one of"),
        ({"features": []}, "non-empty list"),
        ({"features": ["a", "a"]}, "duplicate"),
        ({"sha256": "xyz"}, "64 hex digits"),
        ({"outputs": {"label": "label"}}, "outputs.score is required"),
        ({"outputs": {"score": "probabilities[1]"}}, "is not 'name' or 'name[:,k]'"),
        ({"surprise": 1}, "unknown field(s) surprise"),
        ({"categorical": {"nope": ["a"]}}, "not in features"),
        ({"threshold": 2}, "threshold must be a number in [0, 1]"),
        ({"allow_missing": "yes"}, "allow_missing must be true or false"),
        ({"online": {"learner": "sgd"}}, "online.learner must be one of ftrl"),
        ({"online": {"learner": "ftrl", "alpha": 0}}, "online.alpha must be positive"),
        ({"online": {"learner": "ftrl", "l2": -1}}, "online.l2 must be a non-negative number"),
        ({"online": {"learner": "ftrl", "eta": 1}}, "unknown field(s) online.eta"),
        ({"online": {"learner": "ftrl", "rate_floor": -0.1}}, "online.rate_floor must be a non-negative number"),
        ({"online": {"learner": "ftrl", "rate_floor": "0.01"}}, "online.rate_floor must be a non-negative number"),
        ({"online": {"learner": "ftrl", "rate_floor": True}}, "online.rate_floor must be a non-negative number"),
        ({"online": {"learner": "ftrl", "rate_floor": float("inf")}}, "online.rate_floor must be a finite"),
        (
            {"online": {"learner": "ftrl", "alpha": 0.1, "rate_floor": 0.2}},
            "online.rate_floor must be at most online.alpha / online.beta = 0.1 (the step a fresh coordinate "
            "starts with); lower it, or set 0 for no floor",
        ),
        (
            {"calibration": {"alpha": 0.1, "beta": 2, "rate_floor": 0.1}},
            "calibration.rate_floor must be at most calibration.alpha / calibration.beta = 0.05",
        ),
        ({"online": {"learner": "ftrl"}, "task": "regression"}, "needs task = 'binary-classification'"),
        ({"reference": {"nope": {"edges": [1], "fractions": [0.5, 0.5]}}}, "reference feature 'nope' is not in"),
        ({"reference": {"hour": {"edges": [1]}}}, "reference.hour must have exactly edges and fractions"),
        ({"reference": {"hour": {"edges": [2, 1], "fractions": [0.2, 0.3, 0.5]}}}, "strictly increasing"),
        ({"reference": {"hour": {"edges": [1], "fractions": [0.2, 0.3]}}}, "sum to 1"),
        ({"online": {"learner": "ftrl", "on_drift": "retrain"}}, "online.on_drift must be one of restart"),
        ({"concept_drift": {"detector": "ddm"}}, "concept_drift.detector must be one of adwin, page-hinkley"),
        ({"concept_drift": {"detector": "adwin", "threshold": 3}}, "concept_drift.threshold for adwin"),
        ({"concept_drift": {"clock": 1.5}}, "concept_drift.clock has the wrong type"),
        ({"concept_drift": {"delta": 2}}, "concept_drift: delta must be in (0, 1)"),
        ({"concept_drift": {"detector": "page-hinkley", "mode": "sideways"}}, "mode must be up, down or both"),
        ({"concept_drift": "adwin"}, "[concept_drift] must be a table"),
        ({"calibration": {"features": ["nope"]}}, "calibration.features must be a list of the card's features"),
        ({"calibration": {"features": ["hour"], "scale": [0]}}, "calibration.scale must be positive"),
        ({"calibration": {"features": ["hour"], "mean": [1, 2]}}, "calibration.mean must be one number per"),
        ({"calibration": {"alpha": 0}}, "calibration.alpha must be positive"),
        ({"calibration": {"on_drift": "x"}}, "calibration.on_drift must be one of"),
        ({"calibration": {"rate": 1}}, "unknown field(s) calibration.rate"),
        ({"calibration": {}, "online": {"learner": "ftrl"}}, "[calibration] needs a binary classifier without"),
    ],
)
def test_an_invalid_card_is_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as raised:
        parse_card(with_(**changes), "models/fraud/3/card.toml")
    assert str(raised.value).startswith("models/fraud/3/card.toml: ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (GraphSignature((TensorInfo("X", (None, 3), "float"),), SIGNATURE.outputs), "is not an input of the graph"),
        (GraphSignature((TensorInfo("float_input", (None, 4), "float"),), SIGNATURE.outputs), "takes 4 features"),
        (GraphSignature((TensorInfo("float_input", (None, 3), "double"),), SIGNATURE.outputs), "not float32"),
        (GraphSignature((TensorInfo("float_input", (None,), "float"),), SIGNATURE.outputs), "rank 1"),
        (GraphSignature(SIGNATURE.inputs, (TensorInfo("label", (None,), "int64"),)), "reads 'probabilities'"),
        (
            GraphSignature(
                SIGNATURE.inputs,
                (TensorInfo("label", (None,), "int64"), TensorInfo("probabilities", (None, 1), "float")),
            ),
            "column 1 of 1",
        ),
    ],
)
def test_a_card_that_disagrees_with_its_graph_is_refused(signature: GraphSignature, message: str) -> None:
    card = parse_card(CARD, "card.toml")
    with pytest.raises(ModelError, match=message):
        check_signature(card, signature, "model.onnx")


def test_a_dynamic_feature_axis_is_accepted() -> None:
    card = parse_card(CARD, "card.toml")
    check_signature(card, GraphSignature((TensorInfo("float_input", (None, None), "float"),), SIGNATURE.outputs), "m")


def test_concept_drift_and_on_drift_default_and_parse() -> None:
    """Every binary classifier is watched by ADWIN with River's defaults; an online one restarts on a drift."""
    plain = parse_card(with_(), "card.toml")
    assert plain.concept_drift == DetectorSpec() and plain.concept_drift.kind == "adwin"
    assert plain.on_drift == "restart"
    card = parse_card(
        with_(
            online={"learner": "ftrl", "on_drift": "reset-rates"},
            concept_drift={"detector": "page-hinkley", "threshold": 20, "mode": "up", "min_instances": 50},
        ),
        "card.toml",
    )
    assert card.on_drift == "reset-rates"
    assert card.concept_drift.kind == "page-hinkley"
    assert card.concept_drift.page_hinkley == PageHinkleyParams(min_instances=50, threshold=20.0, mode="up")
    off = parse_card(with_(concept_drift={"detector": "none"}), "card.toml")
    assert off.concept_drift.new() is None


def test_a_calibration_stage_starts_as_the_identity_with_the_reference_standardisation() -> None:
    card = parse_card(
        with_(
            calibration={"features": ["hour"]},
            reference={"hour": {"edges": [6.0, 12.0, 18.0], "fractions": [0.25, 0.25, 0.25, 0.25]}},
        ),
        "card.toml",
    )
    spec = card.calibration
    assert spec is not None and spec.columns == (card.features.index("hour"),) and spec.on_drift == "restart"
    assert spec.mean == (12.0,) and spec.scale[0] > 0
    scores = np.array([0.01, 0.3, 0.5, 0.97])
    rows = np.zeros((4, len(card.features)))
    rows[:, spec.columns[0]] = [0.0, 6.0, 12.0, 23.0]
    np.testing.assert_allclose(calibration.score_many(calibration.initial(spec), scores, rows, spec), scores)
    assert parse_card(with_(), "card.toml").calibration is None
