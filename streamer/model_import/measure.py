"""The two measurements of an import, on real rows: the conversion proof and the holdout metrics.

``prove`` scores the proof rows with the source model and with the converted version exactly as loaded by the
worker's own validation (``model_repository.load_version``), then lets ``core.conversion_proof`` decide.
``holdout_metrics`` scores a version through serving's own output reading (``model_repository.score_rows``)
and lets ``core.holdout`` compute the figures; ``compare`` measures the candidate and the champion on the rows
both accept, so that they are judged on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.adapters import model_repository
from streamer.adapters.onnx_models import LoadedModel
from streamer.core.conversion_proof import Proof, prove_classifier, prove_regressor
from streamer.core.errors import ImportRefused, ScoringError
from streamer.core.holdout import HoldoutMetrics, metrics_of
from streamer.model_import.data import Rows, Table, label_values, rows_for
from streamer.model_import.onnx_graph import Outputs
from streamer.model_import.source_model import SourceModel


@dataclass(frozen=True, slots=True)
class ProofRows:
    """The float32 rows the proof runs on, and how a refusal names each (``holdout row 12``)."""

    matrix: np.ndarray
    names: list[str]
    described: str


def proof_rows(model: LoadedModel, holdout: Table | None, reference: Table | None, sample: int) -> ProofRows:
    """The holdout's rows, and ``sample`` rows drawn (seeded) from the reference; for an ONNX file given with
    neither, 256 seeded rows around zero (its serving form is compared with the file itself)."""
    parts: list[np.ndarray] = []
    names: list[str] = []
    described: list[str] = []
    if holdout is not None:
        rows = rows_for(model.card, holdout, what="--holdout")
        parts.append(rows.matrix)
        names += [f"holdout row {r + 1}" for r in rows.rows.tolist()]
        described.append(f"{len(rows.rows)} rows of the holdout {holdout.path.name}")
    if reference is not None and sample > 0:
        drawn = np.random.default_rng(0).choice(reference.rows, min(sample, reference.rows), replace=False)
        rows = rows_for(model.card, reference, np.sort(drawn).astype(np.int64), what="--reference")
        parts.append(rows.matrix)
        names += [f"reference row {r + 1}" for r in rows.rows.tolist()]
        described.append(f"{len(rows.rows)} rows drawn from the reference {reference.path.name}")
    if not parts:
        matrix = np.random.default_rng(0).normal(0.0, 1.0, (256, len(model.card.features))).astype(np.float32)
        return ProofRows(matrix, [f"probe row {i + 1}" for i in range(256)], "256 seeded probe rows")
    return ProofRows(np.concatenate(parts), names, " and ".join(described))


def prove(source: SourceModel, model: LoadedModel, outputs: Outputs, rows: ProofRows) -> Proof:
    """The source model against the converted version on ``rows``."""
    matrix = rows.matrix
    try:
        expected = source.predict(matrix)
    except ImportRefused:
        raise
    except Exception as exc:  # whatever the source's library raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ImportRefused(f"the source model cannot score the proof rows: {type(exc).__name__}: {first}") from None
    try:
        answered = dict(zip(model.output_names, model.session.run(None, {model.card.input: matrix}), strict=True))
    except Exception as exc:  # ONNX Runtime's own error types
        raise ImportRefused(f"the converted model cannot score the proof rows: {exc}") from None
    features = model.card.features
    thresholds = source.split_thresholds()
    if outputs.probabilities is not None:
        assert expected.probabilities is not None and expected.labels is not None
        converted_labels = np.asarray(answered[outputs.label]).reshape(-1) if outputs.label else expected.labels
        return prove_classifier(
            expected.probabilities,
            np.asarray(answered[outputs.probabilities]),
            expected.labels,
            converted_labels,
            matrix=matrix,
            features=features,
            thresholds=thresholds,
        )
    assert expected.values is not None
    return prove_regressor(
        expected.values, np.asarray(answered[outputs.score]), matrix=matrix, features=features, thresholds=thresholds
    )


def _metrics(model: LoadedModel, rows: Rows, labels: np.ndarray) -> HoldoutMetrics:
    try:
        result = model_repository.score_rows(model, rows.matrix)
    except ScoringError as exc:
        raise ImportRefused(f"{model.card.ref} cannot score the holdout: {exc.detail}") from None
    card = model.card
    return metrics_of(card.task, labels, result.score, result.label, card.threshold)


@dataclass(frozen=True, slots=True)
class Measured:
    """A version's figures on the holdout rows; ``rejected``: rows serving would reject for it."""

    metrics: HoldoutMetrics
    rejected: int


def holdout_metrics(model: LoadedModel, holdout: Table, label_column: str) -> Measured:
    rows = rows_for(model.card, holdout, what="--holdout")
    return Measured(_metrics(model, rows, label_values(holdout, label_column, rows.rows)), rows.rejected)


def compare(
    candidate: LoadedModel, champion: LoadedModel, holdout: Table, label_column: str
) -> tuple[Measured, Measured]:
    """Both versions on the holdout rows both accept."""
    mine = rows_for(candidate.card, holdout, what="--holdout")
    theirs = rows_for(champion.card, holdout, what="--holdout")
    common = np.intersect1d(mine.rows, theirs.rows)
    if not len(common):
        raise ImportRefused(f"no holdout row is accepted by both {candidate.card.ref} and {champion.card.ref}")
    labels = label_values(holdout, label_column, common)
    results = []
    for model, rows in ((candidate, mine), (champion, theirs)):
        keep = np.isin(rows.rows, common)
        shared = Rows(rows.matrix[keep], rows.rows[keep], 0)
        results.append(Measured(_metrics(model, shared, labels), holdout.rows - len(common)))
    return results[0], results[1]
