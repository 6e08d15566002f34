"""The checks every scorer passes (``core.scorer.Scorer``), written once, river-style.

``CHECKS`` holds one function per property of the contract in ``core.scorer``; each takes the scorer under test
and the card of a version it serves, and raises ``AssertionError`` when the scorer breaks the contract.
``check_scorer(scorer, card)`` runs them all (for a new implementation's own test);
``tests/contract/test_scorers.py`` runs each check as its own test against every implementation.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from streamer.core.cards import ModelCard
from streamer.core.errors import SCORING_FAILED, ScoringError
from streamer.core.graph.scoring_graph import ScoringGraph
from streamer.core.scorer import Scorer

Check = Callable[[Scorer, ModelCard], None]


def matrix(card: ModelCard, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` float32 rows of ``card``'s width: reference midpoints (zeros without a reference) plus noise."""
    centre = np.array(
        [
            card.reference[f].edges[len(card.reference[f].edges) // 2]
            if f in card.reference and card.reference[f].edges
            else 0.0
            for f in card.features
        ]
    )
    noise = np.random.default_rng(seed).normal(0.0, 1.0, (rows, len(card.features)))
    return (centre + noise * np.maximum(np.abs(centre), 1.0)).astype(np.float32)


def _outputs(scorer: Scorer, card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    out = scorer.infer(card, x)
    assert isinstance(out, Mapping) and out, f"{card.ref}: no outputs"
    return {name: np.asarray(value) for name, value in out.items()}


def _same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a
    )


def check_declares_the_protocol(scorer: Scorer, card: ModelCard) -> None:
    assert isinstance(scorer, Scorer)


def check_rows_out_equal_rows_in(scorer: Scorer, card: ModelCard) -> None:
    for rows in (1, 2, 17, 300):
        for name, value in _outputs(scorer, card, matrix(card, rows)).items():
            assert value.shape[:1] == (rows,), f"{name}: shape {value.shape} for {rows} rows"


def check_empty_batch(scorer: Scorer, card: ModelCard) -> None:
    for name, value in _outputs(scorer, card, matrix(card, 0)).items():
        assert value.shape[:1] == (0,), f"{name}: shape {value.shape} for 0 rows"


def check_float32_input_gives_a_score_per_row(scorer: Scorer, card: ModelCard) -> None:
    """The card's output references read one finite score per row of a float32 matrix (as serving reads it)."""
    x = matrix(card, 9)
    assert x.dtype == np.float32
    result = ScoringGraph.single(card).run(x, scorer.infer)
    assert result.score.shape == (9,) and np.isfinite(result.score).all()
    assert result.label is None or result.label.shape == (9,)


def check_bad_shape_raises_scoring_error(scorer: Scorer, card: ModelCard) -> None:
    good = matrix(card, 4)
    bad = {
        "one column too many": np.hstack([good, good[:, :1]]),
        "one column too few": good[:, :-1],
        "rank 1": good[0],
        "rank 3": good[None],
        "float64": good.astype(np.float64),
    }
    for what, x in bad.items():
        with pytest.raises(ScoringError) as raised:
            scorer.infer(card, x)
        error = raised.value
        assert error.reason == SCORING_FAILED and not error.retriable, what
        assert str(error) and "\n" not in str(error), f"{what}: the message is not one line: {error}"


def check_unknown_version_raises_scoring_error(scorer: Scorer, card: ModelCard) -> None:
    other = dataclasses.replace(card, version=card.version + 1000)
    with pytest.raises(ScoringError):
        scorer.infer(other, matrix(card, 2))


def check_input_is_not_modified(scorer: Scorer, card: ModelCard) -> None:
    x = matrix(card, 8)
    before = x.copy()
    scorer.infer(card, x)
    assert np.array_equal(x, before)


def check_deterministic(scorer: Scorer, card: ModelCard) -> None:
    x = matrix(card, 50, seed=3)
    assert _same(_outputs(scorer, card, x), _outputs(scorer, card, x.copy()))


def check_concurrent_calls_agree_with_sequential_calls(scorer: Scorer, card: ModelCard) -> None:
    inputs = [matrix(card, 64 + 16 * k, seed=k) for k in range(8)]
    sequential = [_outputs(scorer, card, x) for x in inputs]
    start = threading.Barrier(len(inputs))

    def call(x: np.ndarray) -> list[dict[str, np.ndarray]]:
        start.wait(timeout=10)  # all threads in infer at once
        return [_outputs(scorer, card, x) for _ in range(5)]

    with ThreadPoolExecutor(len(inputs)) as pool:
        concurrent = list(pool.map(call, inputs))
    for k, (alone, together) in enumerate(zip(sequential, concurrent, strict=True)):
        assert all(_same(alone, out) for out in together), f"input {k}: a concurrent call differs from a lone one"


CHECKS: tuple[Check, ...] = (
    check_declares_the_protocol,
    check_rows_out_equal_rows_in,
    check_empty_batch,
    check_float32_input_gives_a_score_per_row,
    check_bad_shape_raises_scoring_error,
    check_unknown_version_raises_scoring_error,
    check_input_is_not_modified,
    check_deterministic,
    check_concurrent_calls_agree_with_sequential_calls,
)


def check_scorer(scorer: Scorer, card: ModelCard) -> None:
    """Run every check against ``scorer`` serving ``card``; the first broken property raises."""
    for check in CHECKS:
        check(scorer, card)
