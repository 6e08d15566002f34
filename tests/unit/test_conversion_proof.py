"""core.conversion_proof: equal within the tolerance, and each likely cause named on a refusal."""

from __future__ import annotations

import numpy as np

from streamer.core.conversion_proof import prove_classifier, prove_regressor, threshold_crossings

FEATURES = ("a", "b")


def probabilities(rows: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).uniform(0.05, 0.95, rows)
    return np.column_stack([1 - p, p])


def test_equal_within_the_tolerance() -> None:
    source = probabilities(100)
    labels = source.argmax(axis=1)
    proof = prove_classifier(source, source + 9e-6, labels, labels, matrix=np.zeros((100, 2)), features=FEATURES)
    assert proof.equal and proof.max_difference <= 1e-5 and proof.figures()["rows"] == 100


def test_reordered_classes_are_named_as_the_cause() -> None:
    source = probabilities(50)
    labels = source.argmax(axis=1)
    proof = prove_classifier(source, source[:, ::-1], labels, 1 - labels, matrix=np.zeros((50, 2)), features=FEATURES)
    assert not proof.equal and proof.differing_rows == 50
    names = [f"row {i + 1}" for i in range(50)]
    line = proof.describe(names, classes=(0, 1))
    assert "class order" in line and "[1, 0]" in line and line.startswith("50 of 50 rows differ beyond 1e-05")
    assert "row 1 column" in line and "\n" not in line


def test_a_value_between_a_float64_threshold_and_its_float32_rounding_is_named() -> None:
    value = np.float32(0.51)
    threshold = np.nextafter(np.float64(value), -np.inf)  # just below the value; rounds up to it in float32
    matrix = np.array([[0.0, 0.2], [0.0, value]], dtype=np.float32)
    assert threshold_crossings(matrix, np.array([0, 1]), {1: np.array([threshold, 0.7])}) == [
        (1, 1, float(value), float(threshold))
    ]
    source = np.array([[0.9, 0.1], [0.2, 0.8]])
    converted = np.array([[0.9, 0.1], [0.7, 0.3]])  # row 1 took the other branch
    proof = prove_classifier(
        source,
        converted,
        np.array([0, 1]),
        np.array([0, 0]),
        matrix=matrix,
        features=FEATURES,
        thresholds={1: np.array([threshold])},
    )
    assert not proof.equal and proof.differing_rows == 1
    assert proof.cause is not None and proof.cause.startswith("float32 split thresholds: 'b' = 0.50999999")
    assert "'b' = 0.50999999 on second row lies between" in proof.describe(["first row", "second row"])


def test_labels_that_disagree_on_decisive_rows_only() -> None:
    source = np.array([[0.5, 0.5], [0.2, 0.8]])
    proof = prove_classifier(
        source, source, np.array([0, 1]), np.array([1, 1]), matrix=np.zeros((2, 2)), features=FEATURES
    )
    assert proof.equal  # a tie may fall either way
    proof = prove_classifier(
        source, source, np.array([0, 1]), np.array([0, 0]), matrix=np.zeros((2, 2)), features=FEATURES
    )
    assert not proof.equal and proof.cause is not None and proof.cause.startswith("labels")


def test_regression_is_relative() -> None:
    source = np.array([1000.0, 1.0, 0.0, -50.0])
    ok = prove_regressor(source, source * (1 + 5e-6), matrix=np.zeros((4, 2)), features=FEATURES)
    assert ok.equal and ok.measure == "relative"
    bad = prove_regressor(source, source + np.array([0.0, 0.0, 0.0, 0.01]), matrix=np.zeros((4, 2)), features=FEATURES)
    assert not bad.equal and bad.differences[0].row == 3 and "unknown" in bad.describe(["r1", "r2", "r3", "r4"])
