"""One batch of consumed records -> one scored batch: every row a prediction or a dead letter.

The whole path of a batch, as pure code and a batch at a time: decode every value (``envelope``), route the
requests by their distinct model strings (``routing``, resolved once per string, not per row), build one
feature matrix per model version (``features``), run that model's scoring graph (``graph``) once, and encode
the predictions in bulk. A bad row never fails its batch-mates; a failed model run fails only the rows of that
model, as ``scoring-failed``; a score that is not finite is ``scoring-failed`` for that request; a prediction
over the output limit (an OIP request with very many rows) is a ``too-large`` dead letter.

``ScoredBatch.bodies`` hold each prediction's JSON without its closing brace: ``latency_ms`` is measured when
the prediction is produced (contract section 3) and appended then, for the batch at once
(``envelope.finish_predictions``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core import envelope
from streamer.core.cards import ModelCard
from streamer.core.errors import SCORING_FAILED, TOO_LARGE, DecodeError, ScoringError
from streamer.core.features import FeatureBatch, build_matrix
from streamer.core.graph import GraphResult, Infer, ScoringGraph
from streamer.core.routing import Catalog
from streamer.core.types import Records


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = envelope.DEFAULT_MAX_MESSAGE_BYTES
    max_rows: int = envelope.DEFAULT_MAX_ROWS
    # The largest prediction the predictions topic takes (its record, headers included).
    max_output_bytes: int = envelope.DEFAULT_MAX_MESSAGE_BYTES


@dataclass(slots=True)
class ModelSummary:
    """What one model version made of a batch, for metrics and the prediction log (all columnar).

    ``rows``: batch rows answered with a prediction. ``scores``/``labels``: one per scored matrix row (an OIP
    request has several), ``score_rows`` the batch row of each. ``logged_*``: the single-row predictions, which
    a label can join (``logged_features``: their features as scored, for an online model only).
    """

    card: ModelCard
    rows: list[int] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    labels: np.ndarray | None = None
    score_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    logged_ids: list[str] = field(default_factory=list)
    logged_rows: list[int] = field(default_factory=list)
    logged_scores: list[float] = field(default_factory=list)
    logged_features: np.ndarray | None = None


@dataclass(slots=True)
class ScoredBatch:
    """Per row of ``records``: ``bodies[row]`` (an open prediction body) or ``errors[row]`` (a dead letter).

    ``error_models`` names the model (``name@version``) of a dead letter that was routed before it failed.
    """

    records: Records
    bodies: list[bytes | None]
    errors: dict[int, DecodeError]
    error_models: dict[int, str] = field(default_factory=dict)
    models: list[ModelSummary] = field(default_factory=list)


def score_records(
    records: Records,
    catalog: Catalog,
    infer: Infer,
    limits: Limits = Limits(),
    graph_for: Callable[[ModelCard], ScoringGraph] = ScoringGraph.single,
    observe_matrix: Callable[[ModelCard, np.ndarray], None] | None = None,
) -> ScoredBatch:
    """Score every row of ``records``; ``observe_matrix`` sees each model's accepted matrix (drift counts)."""
    decoded = envelope.decode_requests(records.values, max_bytes=limits.max_message_bytes, max_rows=limits.max_rows)
    scored = ScoredBatch(records, [None] * len(records), dict(decoded.errors))
    for card, members in _route(records, decoded, catalog, scored).values():
        _score_model(records, decoded, card, members, scored, infer, graph_for(card), limits, observe_matrix)
    return scored


def _route(
    records: Records, decoded: envelope.DecodedRequests, catalog: Catalog, scored: ScoredBatch
) -> dict[str, tuple[ModelCard, list[int]]]:
    """Group the decoded requests (indices into ``decoded.wires``) by the model version that serves them."""
    wires, rows, headers = decoded.wires, decoded.rows, records.headers
    requested: dict[str | None, list[int]] = {}
    if any(headers):
        for i, wire in enumerate(wires):
            name = wire.model
            if name is None and headers[rows[i]]:
                name = envelope.model_from_headers(headers[rows[i]])
            requested.setdefault(name, []).append(i)
    else:
        for i, wire in enumerate(wires):
            requested.setdefault(wire.model, []).append(i)
    by_version: dict[str, tuple[ModelCard, list[int]]] = {}
    for name, members in requested.items():
        try:
            card = catalog.resolve(name)
        except DecodeError as exc:
            for i in members:
                scored.errors[rows[i]] = exc
            continue
        group = by_version.setdefault(card.ref, (card, []))
        group[1].extend(members)
    for _, members in by_version.values():
        members.sort()  # several model strings may name one version: keep batch order inside it
    return by_version


def _score_model(
    records: Records,
    decoded: envelope.DecodedRequests,
    card: ModelCard,
    members: list[int],
    scored: ScoredBatch,
    infer: Infer,
    graph: ScoringGraph,
    limits: Limits,
    observe_matrix: Callable[[ModelCard, np.ndarray], None] | None,
) -> None:
    wires, rows, tensors = decoded.wires, decoded.rows, decoded.tensors
    if tensors:
        features = [None if i in tensors else wires[i].features for i in members]
        member_tensors = {j: tensors[i] for j, i in enumerate(members) if i in tensors}
    else:
        features = [wires[i].features for i in members]
        member_tensors = None
    batch = build_matrix(card, features, member_tensors)  # type: ignore[arg-type]
    errors, error_models = scored.errors, scored.error_models
    for j, error in batch.errors:
        errors[rows[members[j]]] = error
        error_models[rows[members[j]]] = card.ref
    if not batch.accepted:
        return
    if observe_matrix is not None:
        observe_matrix(card, batch.matrix)
    try:
        result = graph.run(batch.matrix, infer)
    except ScoringError as exc:
        for j in batch.accepted:
            errors[rows[members[j]]] = DecodeError(SCORING_FAILED, exc.detail)
            error_models[rows[members[j]]] = card.ref
        return
    summary = ModelSummary(card)
    _predictions(records, decoded, card, members, batch, result, scored, summary, limits)
    scored.models.append(summary)


def _predictions(
    records: Records,
    decoded: envelope.DecodedRequests,
    card: ModelCard,
    members: list[int],
    batch: FeatureBatch,
    result: GraphResult,
    scored: ScoredBatch,
    summary: ModelSummary,
    limits: Limits,
) -> None:
    """Cut the model's per-row results into per-request bodies, encoded in one call."""
    wires, rows = decoded.wires, decoded.rows
    scores, labels = result.score, result.label
    finite = np.isfinite(scores)
    score_list = scores.tolist()
    label_list = labels.tolist() if labels is not None else None
    outputs = {name: value.tolist() for name, value in result.outputs.items()}
    name, version = card.name, str(card.version)
    topic, partition, offsets = records.topic, records.partition, records.offsets
    bodies: list[dict[str, Any]] = []
    body_rows: list[int] = []
    kept_matrix_rows: list[int] = []
    online = card.online is not None
    for j, member in enumerate(batch.accepted):
        i = members[member]
        row = rows[i]
        start, stop = batch.rows_of(j)
        request_id = wires[i].id
        if request_id is None:
            request_id = f"{topic}:{partition}:{offsets[row]}"
        if stop - start == 1 and i not in decoded.tensors:
            if not finite[start]:
                scored.errors[row] = DecodeError(SCORING_FAILED, f"{card.ref} returned a non-finite score")
                scored.error_models[row] = card.ref
                continue
            score: Any = score_list[start]
            label: Any = label_list[start] if label_list is not None else None
            row_outputs = {output: value[start] for output, value in outputs.items()}
            summary.logged_ids.append(request_id)
            summary.logged_rows.append(row)
            summary.logged_scores.append(score)
            if online:
                kept_matrix_rows.append(start)
        else:
            if not finite[start:stop].all():
                scored.errors[row] = DecodeError(SCORING_FAILED, f"{card.ref} returned a non-finite score")
                scored.error_models[row] = card.ref
                continue
            score = score_list[start:stop]
            label = label_list[start:stop] if label_list is not None else None
            row_outputs = {output: value[start:stop] for output, value in outputs.items()}
        body_rows.append(row)
        bodies.append(
            {
                "id": request_id,
                "model": name,
                "version": version,
                "score": score,
                "label": label,
                "outputs": row_outputs,
                "source": {"topic": topic, "partition": partition, "offset": offsets[row]},
            }
        )
    encoded = envelope.encode_prediction_bodies(bodies)
    limit = limits.max_output_bytes - envelope.RECORD_OVERHEAD_BYTES - 256  # headers, key and latency on top
    if encoded and max(map(len, encoded)) > limit:
        _too_large(records, encoded, body_rows, limit, card, scored)
    out = scored.bodies
    for row, body in zip(body_rows, encoded, strict=True):
        if row not in scored.errors:
            out[row] = body
    summary.rows = [row for row in body_rows if row not in scored.errors]
    _summarise(batch, result, members, rows, summary, scored, kept_matrix_rows, online)


def _too_large(
    records: Records, encoded: list[bytes], body_rows: list[int], limit: int, card: ModelCard, scored: ScoredBatch
) -> None:
    for row, body in zip(body_rows, encoded, strict=True):
        size = len(body) + (len(records.keys[row] or b""))
        if size > limit:
            scored.errors[row] = DecodeError(
                TOO_LARGE, f"the prediction of {card.ref} has {size} bytes, over the output limit of {limit}"
            )
            scored.error_models[row] = card.ref


def _summarise(
    batch: FeatureBatch,
    result: GraphResult,
    members: list[int],
    rows: list[int],
    summary: ModelSummary,
    scored: ScoredBatch,
    kept_matrix_rows: list[int],
    online: bool,
) -> None:
    """Score arrays per batch row for the metrics; features of the logged rows for an online model."""
    if batch.starts is None:
        score_rows = np.fromiter((rows[members[j]] for j in batch.accepted), dtype=np.int64, count=len(batch.accepted))
    else:
        counts = np.diff(batch.starts)
        score_rows = np.repeat([rows[members[j]] for j in batch.accepted], counts)
    if scored.errors:
        keep = np.fromiter((r not in scored.errors for r in score_rows.tolist()), dtype=bool, count=len(score_rows))
        summary.scores, summary.score_rows = result.score[keep], score_rows[keep]
        summary.labels = result.label[keep] if result.label is not None else None
    else:
        summary.scores, summary.score_rows, summary.labels = result.score, score_rows, result.label
    if online and kept_matrix_rows:
        summary.logged_features = batch.matrix[kept_matrix_rows]
    if scored.errors and summary.logged_rows:
        logged = [k for k, r in enumerate(summary.logged_rows) if r not in scored.errors]
        if len(logged) != len(summary.logged_rows):
            summary.logged_ids = [summary.logged_ids[k] for k in logged]
            summary.logged_rows = [summary.logged_rows[k] for k in logged]
            summary.logged_scores = [summary.logged_scores[k] for k in logged]


def outcome_counts(
    scored: ScoredBatch, sent: list[int] | None
) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
    """Requests per (model, version, outcome) and dead letters per reason, over the rows ``sent`` (None: all).

    Rows skipped by the read-back rule were answered by an earlier owner and are not counted again.
    """
    requests: dict[tuple[str, str, str], int] = {}
    reasons: dict[str, int] = {}
    sent_set = None if sent is None else set(sent)
    for summary in scored.models:
        count = len(summary.rows) if sent_set is None else sum(1 for r in summary.rows if r in sent_set)
        if count:
            key = (summary.card.name, str(summary.card.version), "prediction")
            requests[key] = requests.get(key, 0) + count
    for row, error in scored.errors.items():
        if sent_set is not None and row not in sent_set:
            continue
        reasons[error.reason] = reasons.get(error.reason, 0) + 1
        name, _, version = scored.error_models.get(row, "").partition("@")
        key = (name, version, "dead_letter")
        requests[key] = requests.get(key, 0) + 1
    return requests, reasons


def sent_scores(summary: ModelSummary, sent: list[int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The scores (and labels) of ``summary`` over the rows ``sent`` (None: all)."""
    if sent is None:
        return summary.scores, summary.labels
    mask = np.isin(summary.score_rows, np.asarray(sent, dtype=np.int64))
    return summary.scores[mask], summary.labels[mask] if summary.labels is not None else None


def mapping_of(scored: ScoredBatch) -> Mapping[int, str]:
    """Dead-letter reason by row (for logs and tests)."""
    return {row: error.reason for row, error in scored.errors.items()}
