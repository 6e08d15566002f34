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

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core import envelope
from streamer.core.cards import ModelCard
from streamer.core.errors import SCORING_FAILED, TOO_LARGE, DecodeError, ScoringError
from streamer.core.features import FeatureBatch, build_matrix
from streamer.core.graph.execution import Lookup, StageStats, no_lookup, run_graph
from streamer.core.graph.scoring_graph import GraphResult, Infer, ScoringGraph
from streamer.core.graph.spec import GraphSpec
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
    a label can join (``logged_features``: their features as scored, for an online model or a calibrated one only).
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
    # Declared graphs: rows and seconds per stage, enrichment misses (for the metrics).
    stages: list[StageStats] = field(default_factory=list)
    # The challengers' pass over the same rows (``Catalog.shadow_of``): bodies for the shadow topic, and rows a
    # challenger failed on in ``errors`` (counted, never dead-lettered: a shadow never changes what leaves).
    shadow: ScoredBatch | None = None


@dataclass(frozen=True, slots=True)
class GraphContext:
    """What a declared graph needs beyond a model's: routing of its model stages, the entity lookup of its
    enrichment stages, and a clock for per-stage seconds (all injected: the core reads no store and no clock)."""

    catalog: Catalog
    lookup: Lookup = no_lookup
    clock: Callable[[], float] = lambda: 0.0


def score_records(
    records: Records,
    catalog: Catalog,
    infer: Infer,
    limits: Limits = Limits(),
    graph_for: Callable[[ModelCard], ScoringGraph] = ScoringGraph.single,
    observe_matrix: Callable[[ModelCard, np.ndarray], None] | None = None,
    lookup: Lookup = no_lookup,
    clock: Callable[[], float] = lambda: 0.0,
) -> ScoredBatch:
    """Score every row of ``records``; ``observe_matrix`` sees each model's accepted matrix (drift counts)."""
    decoded = envelope.decode_requests(records.values, max_bytes=limits.max_message_bytes, max_rows=limits.max_rows)
    scored = ScoredBatch(records, [None] * len(records), dict(decoded.errors))
    context = GraphContext(catalog, lookup, clock) if catalog.graphs else None
    for card, members in _route(records, decoded, catalog, scored).values():
        run = _Run(records, decoded, infer, limits, context)
        _score_model(run, card, members, scored, graph_for(card), observe_matrix)
        challenger = catalog.shadow_of(card)
        if challenger is not None:
            if scored.shadow is None:
                scored.shadow = ScoredBatch(records, [None] * len(records), {})
            served = [i for i in members if scored.bodies[decoded.rows[i]] is not None]
            if served:
                _score_model(run, challenger, served, scored.shadow, graph_for(challenger), None)
    return scored


@dataclass(frozen=True, slots=True)
class _Run:
    """The batch-wide inputs of scoring one model's (or graph's) rows."""

    records: Records
    decoded: envelope.DecodedRequests
    infer: Infer
    limits: Limits
    graphs: GraphContext | None


_model_of = operator.attrgetter("model")


def _route(
    records: Records, decoded: envelope.DecodedRequests, catalog: Catalog, scored: ScoredBatch
) -> dict[str, tuple[ModelCard, list[int]]]:
    """Group the decoded requests (indices into ``decoded.wires``) by the model version that serves them."""
    wires, rows, headers = decoded.wires, decoded.rows, records.headers
    requested: dict[str | None, list[int]] = {}
    if not wires:
        return {}
    names = list(map(_model_of, wires))
    if names.count(names[0]) == len(names) and not any(headers):
        requested[names[0]] = list(range(len(wires)))  # the common batch: one model string, no headers
    elif any(headers):
        for i, wire in enumerate(wires):
            name = wire.model
            if name is None and headers[rows[i]]:
                name = envelope.model_from_headers(headers[rows[i]])
            requested.setdefault(name, []).append(i)
    else:
        for i, name in enumerate(names):
            requested.setdefault(name, []).append(i)
    by_version: dict[str, tuple[ModelCard, list[int]]] = {}
    for name, members in requested.items():
        try:
            route = catalog.route(name)
        except DecodeError as exc:
            for i in members:
                scored.errors[rows[i]] = exc
            continue
        if isinstance(route, ModelCard):
            group = by_version.setdefault(route.ref, (route, []))
            group[1].extend(members)
            continue
        keys = records.keys
        ids = [wires[i].id or f"{records.topic}:{records.partition}:{records.offsets[rows[i]]}" for i in members]
        for i, k in zip(members, route.assign([keys[rows[i]] for i in members], ids), strict=True):
            card = route.cards[k]
            by_version.setdefault(card.ref, (card, []))[1].append(i)
    for _, members in by_version.values():
        members.sort()  # several model strings may name one version: keep batch order inside it
    return by_version


def _score_model(
    run: _Run,
    card: ModelCard,
    members: list[int],
    scored: ScoredBatch,
    graph: ScoringGraph,
    observe_matrix: Callable[[ModelCard, np.ndarray], None] | None,
) -> None:
    records, decoded, infer, limits = run.records, run.decoded, run.infer, run.limits
    wires, rows, tensors = decoded.wires, decoded.rows, decoded.tensors
    if tensors:
        features = [None if i in tensors else wires[i].features for i in members]
        member_tensors = {j: tensors[i] for j, i in enumerate(members) if i in tensors}
    else:
        features = [wires[i].features for i in members]
        member_tensors = None
    batch = build_matrix(card, features, member_tensors, decoded.plain)  # type: ignore[arg-type]
    errors, error_models = scored.errors, scored.error_models
    for j, error in batch.errors:
        errors[rows[members[j]]] = error
        error_models[rows[members[j]]] = card.ref
    if not batch.accepted:
        return
    if observe_matrix is not None:
        observe_matrix(card, batch.matrix)
    try:
        declared = run.graphs.catalog.graphs.get(card.ref) if run.graphs is not None else None
        if declared is None:
            result = graph.run(batch.matrix, infer)
        else:
            assert run.graphs is not None
            result = _run_declared(run, run.graphs, declared, members, batch, scored)
    except ScoringError as exc:
        for j in batch.accepted:
            errors[rows[members[j]]] = DecodeError(SCORING_FAILED, exc.detail)
            error_models[rows[members[j]]] = card.ref
        return
    summary = ModelSummary(card)
    _predictions(records, decoded, card, members, batch, result, scored, summary, limits)
    scored.models.append(summary)


def _run_declared(
    run: _Run, context: GraphContext, spec: GraphSpec, members: list[int], batch: FeatureBatch, scored: ScoredBatch
) -> GraphResult:
    """A declared graph over the accepted rows: each matrix row with its request's key and id."""
    records, decoded = run.records, run.decoded
    accepted = [members[j] for j in batch.accepted]
    keys = [records.keys[decoded.rows[i]] for i in accepted]
    ids = [
        decoded.wires[i].id or f"{records.topic}:{records.partition}:{records.offsets[decoded.rows[i]]}"
        for i in accepted
    ]
    if batch.starts is not None:  # OIP requests own several rows: their key and id repeat
        counts = np.diff(batch.starts).tolist()
        keys = [k for k, c in zip(keys, counts, strict=True) for _ in range(c)]
        ids = [i for i, c in zip(ids, counts, strict=True) for _ in range(c)]
    done = run_graph(spec, batch.matrix, keys, ids, context.catalog.route, run.infer, context.lookup, context.clock)
    scored.stages.extend(done.stats)
    return done.result


@dataclass(slots=True)
class _ModelRun:
    """One model version's pass over a batch: what it accepted and what it returned.

    ``accepted[j]`` indexes ``decoded.wires``; request j sits at batch row ``request_rows[j]``, has id ``ids[j]``
    and owns ``result`` rows ``batch.rows_of(j)``. ``failed`` maps j to why its prediction cannot leave.
    """

    card: ModelCard
    records: Records
    batch: FeatureBatch
    result: GraphResult
    accepted: list[int]
    request_rows: list[int]
    ids: list[str]
    tensors: Mapping[int, Any]
    failed: dict[int, DecodeError] = field(default_factory=dict)


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
    """Cut the model's per-row results into per-request bodies, encoded a column at a time."""
    wires, rows = decoded.wires, decoded.rows
    topic, partition, offsets = records.topic, records.partition, records.offsets
    accepted = [members[j] for j in batch.accepted]  # indices into decoded.wires, in batch order
    request_rows = [rows[i] for i in accepted]
    ids = [wires[i].id for i in accepted]
    if None in ids:
        pairs = zip(ids, request_rows, strict=True)
        ids = [f"{topic}:{partition}:{offsets[row]}" if rid is None else rid for rid, row in pairs]
    run = _ModelRun(card, records, batch, result, accepted, request_rows, ids, decoded.tensors)
    if batch.starts is None and not decoded.tensors:
        finite = np.isfinite(result.score)
        if not finite.all():
            run.failed.update(dict.fromkeys(np.flatnonzero(~finite).tolist(), _non_finite(card)))
        open_bodies = envelope.encode_single_predictions(
            ids,
            card.name,
            str(card.version),
            *_columns(result),
            topic,
            partition,
            [offsets[row] for row in request_rows],
            result.decision,
            result.reasons,
        )
    else:
        open_bodies = _general_bodies(run)
    limit = limits.max_output_bytes - envelope.RECORD_OVERHEAD_BYTES - 256  # headers, key and latency on top
    if open_bodies and max(map(len, open_bodies)) > limit:
        for j, body in enumerate(open_bodies):
            size = len(body) + len(records.keys[request_rows[j]] or b"")
            if size > limit and j not in run.failed:
                run.failed[j] = DecodeError(
                    TOO_LARGE, f"the prediction of {card.ref} has {size} bytes, over the output limit of {limit}"
                )
    out = scored.bodies
    for j, row in enumerate(request_rows):
        if j in run.failed:
            scored.errors[row] = run.failed[j]
            scored.error_models[row] = card.ref
        else:
            out[row] = open_bodies[j]
    _summarise(run, summary)


def _non_finite(card: ModelCard) -> DecodeError:
    return DecodeError(SCORING_FAILED, f"{card.ref} returned a non-finite score")


def _columns(result: GraphResult) -> tuple[list[Any], list[Any] | None, dict[str, list[Any]]]:
    """Scores, labels and every output as Python lists: one conversion per column."""
    labels = result.label.tolist() if result.label is not None else None
    return result.score.tolist(), labels, {name: value.tolist() for name, value in result.outputs.items()}


def _general_bodies(run: _ModelRun) -> list[bytes]:
    """Bodies when some requests are OIP (several rows each, arrays per field): one object per request."""
    scores, labels, outputs = _columns(run.result)
    finite = np.isfinite(run.result.score)
    card, records = run.card, run.records
    bodies: list[dict[str, Any]] = []
    for j, i in enumerate(run.accepted):
        start, stop = run.batch.rows_of(j)
        if not finite[start:stop].all():
            run.failed[j] = _non_finite(card)
        if stop - start == 1 and i not in run.tensors:
            score: Any = scores[start]
            label: Any = labels[start] if labels is not None else None
            row_outputs = {name: value[start] for name, value in outputs.items()}
        else:
            score = scores[start:stop]
            label = labels[start:stop] if labels is not None else None
            row_outputs = {name: value[start:stop] for name, value in outputs.items()}
        row = run.request_rows[j]
        source = {"topic": records.topic, "partition": records.partition, "offset": records.offsets[row]}
        body = {"id": run.ids[j], "model": card.name, "version": str(card.version), "score": score, "label": label}
        body["outputs"] = row_outputs
        decision, reasons = run.result.decision, run.result.reasons
        if decision is not None and reasons is not None:
            single = stop - start == 1 and i not in run.tensors
            body["decision"] = decision[start] if single else decision[start:stop]
            body["reasons"] = reasons[start] if single else reasons[start:stop]
        bodies.append({**body, "source": source})
    return envelope.encode_prediction_bodies(bodies)


def _summarise(run: _ModelRun, summary: ModelSummary) -> None:
    """The model's columns for the metrics and the prediction log, without the requests that failed."""
    batch, result, accepted, request_rows, failed = run.batch, run.result, run.accepted, run.request_rows, run.failed
    if batch.starts is None:
        score_rows = np.asarray(request_rows, dtype=np.int64)
        owner = None  # matrix row k belongs to request k
        singles = [j for j, i in enumerate(accepted) if i not in run.tensors] if run.tensors else None
    else:
        owner = np.repeat(np.arange(len(accepted)), np.diff(batch.starts))
        score_rows = np.asarray(request_rows, dtype=np.int64)[owner]
        counts = np.diff(batch.starts).tolist()
        singles = [j for j, i in enumerate(accepted) if counts[j] == 1 and i not in run.tensors]
    scores, labels = result.score, result.label
    if failed:
        bad = np.fromiter(failed, dtype=np.int64, count=len(failed))
        keep = ~np.isin(owner if owner is not None else np.arange(len(accepted)), bad)
        scores, score_rows = scores[keep], score_rows[keep]
        labels = labels[keep] if labels is not None else None
        singles = [j for j in (singles if singles is not None else range(len(accepted))) if j not in failed]
    summary.rows = [row for j, row in enumerate(request_rows) if j not in failed] if failed else request_rows
    summary.scores, summary.labels, summary.score_rows = scores, labels, score_rows
    if singles is None:  # every request is one row and none failed: the columns as they are
        summary.logged_ids, summary.logged_rows = run.ids, request_rows
        summary.logged_scores = result.score.tolist()
        matrix_rows: list[int] | None = None
    else:
        matrix_rows = [batch.rows_of(j)[0] for j in singles]
        summary.logged_ids = [run.ids[j] for j in singles]
        summary.logged_rows = [request_rows[j] for j in singles]
        summary.logged_scores = result.score[matrix_rows].tolist()
    if (run.card.online is not None or run.card.calibration is not None) and summary.logged_ids:
        summary.logged_features = batch.matrix if matrix_rows is None else batch.matrix[matrix_rows]


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
