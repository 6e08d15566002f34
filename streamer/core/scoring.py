"""One batch of consumed records -> one scored batch: every row a prediction or a dead letter.

The whole path of a batch, as pure code and a batch at a time: decode every value (``requests``), route the
requests by their distinct model strings (``routing``, resolved once per string, not per row), build one
feature matrix per model version (``features``), run that model's scoring graph (``graph``) once, and encode
the predictions in bulk (``outputs``, the envelope's declaration). A bad row never fails its batch-mates; a
failed model run fails only the rows of that model, as ``scoring-failed``; a score that is not finite is
``scoring-failed`` for that request; a graph row whose enrichment failed under ``on_failure = "dead-letter"``
is ``enrichment-failed``; a prediction over the output limit (an OIP request with very many rows)
is a ``too-large`` dead letter.

``ScoredBatch.bodies`` hold each prediction's JSON without its closing brace: ``latency_ms`` is measured when
the prediction is produced (contract section 3) and appended then, for the batch at once
(``outputs.finish_predictions``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from streamer.core import requests
from streamer.core.cards import ModelCard
from streamer.core.errors import SCORING_FAILED, DecodeError, ScoringError
from streamer.core.features import FeatureBatch, build_matrix
from streamer.core.graph.execution import Lookup, StageStats, no_lookup, run_graph
from streamer.core.graph.scoring_graph import GraphResult, Infer, ScoringGraph
from streamer.core.graph.spec import GraphSpec
from streamer.core.headers import model_from_headers
from streamer.core.prediction_bodies import ModelSummary, answer_requests, request_ids
from streamer.core.routing import Catalog, Split
from streamer.core.types import Records, pick


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = requests.DEFAULT_MAX_MESSAGE_BYTES
    max_rows: int = requests.DEFAULT_MAX_ROWS
    # The largest prediction the predictions topic takes (its record, headers included).
    max_output_bytes: int = requests.DEFAULT_MAX_MESSAGE_BYTES


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

    @classmethod
    def failed(cls, records: Records, detail: str) -> ScoredBatch:
        """Every row a ``scoring-failed`` dead letter: what a scoring job that raised unexpectedly becomes."""
        error = DecodeError(SCORING_FAILED, detail)
        return cls(records, [None] * len(records), dict.fromkeys(range(len(records)), error))


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
    decode = partial(requests.decode_requests, max_bytes=limits.max_message_bytes, max_rows=limits.max_rows)
    decoded = decode(records.values, features=_expected_features(catalog))
    scored = ScoredBatch(records, [None] * len(records), dict(decoded.errors))
    routed = _route(records, decoded, catalog, scored)
    if decoded.typed is not None and not _all_take(decoded.typed, routed.values(), catalog):
        # Some request goes to a model with other features (named, canary, shadow): decode them as mappings.
        decoded = decode(records.values)
        scored = ScoredBatch(records, [None] * len(records), dict(decoded.errors))
        routed = _route(records, decoded, catalog, scored)
    context = GraphContext(catalog, lookup, clock) if catalog.graphs else None
    for card, members in routed.values():
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


def _expected_features(catalog: Catalog) -> tuple[str, ...] | None:
    """The features of the version(s) a request naming no model goes to, when they agree; else None."""
    try:
        route = catalog.route(None)
    except DecodeError:
        return None
    cards = route.cards if isinstance(route, Split) else (route,)
    return cards[0].features if all(card.features == cards[0].features for card in cards) else None


def _all_take(features: tuple[str, ...], routed: Iterable[tuple[ModelCard, list[int]]], catalog: Catalog) -> bool:
    """Whether every version the batch goes to -- and every challenger scoring beside one -- has ``features``."""
    for card, _ in routed:
        challenger = catalog.shadow_of(card)
        if card.features != features or (challenger is not None and challenger.features != features):
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Run:
    """The batch-wide inputs of scoring one model's (or graph's) rows."""

    records: Records
    decoded: requests.DecodedRequests
    infer: Infer
    limits: Limits
    graphs: GraphContext | None


_model_of = operator.attrgetter("model")
_features_of = operator.attrgetter("features")


def _route(
    records: Records, decoded: requests.DecodedRequests, catalog: Catalog, scored: ScoredBatch
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
                name = model_from_headers(headers[rows[i]])
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
        ids = request_ids(records, decoded, members)
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
        features = list(map(_features_of, pick(wires, members)))  # type: ignore[arg-type]
        member_tensors = None
    batch = build_matrix(card, features, member_tensors, decoded.plain, decoded.typed is not None)
    errors, error_models = scored.errors, scored.error_models
    for j, error in batch.errors:
        errors[rows[members[j]]] = error
        error_models[rows[members[j]]] = card.ref
    if not batch.accepted:
        return
    if observe_matrix is not None:
        observe_matrix(card, batch.matrix)
    refused = None
    try:
        declared = run.graphs.catalog.graphs.get(card.ref) if run.graphs is not None else None
        if declared is None:
            result = graph.run(batch.matrix, infer)
        else:
            assert run.graphs is not None
            result, refused = _run_declared(run, run.graphs, declared, members, batch, scored)
    except ScoringError as exc:
        for j in batch.accepted:
            errors[rows[members[j]]] = DecodeError(SCORING_FAILED, exc.detail)
            error_models[rows[members[j]]] = card.ref
        return
    answers = answer_requests(records, decoded, card, members, batch, result, limits.max_output_bytes, refused)
    request_rows, bodies = answers.request_rows, scored.bodies
    first, count = (request_rows[0], len(request_rows)) if request_rows else (0, 0)
    if count == len(answers.bodies) and request_rows[-1] - first + 1 == count:  # consecutive rows: one slice
        bodies[first : first + count] = answers.bodies
    else:
        for row, body in zip(request_rows, answers.bodies, strict=True):
            bodies[row] = body
    for j, error in answers.failed.items():
        row = request_rows[j]
        bodies[row] = None
        errors[row] = error
        error_models[row] = card.ref
    scored.models.append(answers.summary)


def _run_declared(
    run: _Run, context: GraphContext, spec: GraphSpec, members: list[int], batch: FeatureBatch, scored: ScoredBatch
) -> tuple[GraphResult, np.ndarray | None]:
    """A declared graph over the accepted rows: each matrix row with its request's key and id. Returns the
    result and the rows the graph refused (``GraphRun.refused``)."""
    records, decoded = run.records, run.decoded
    accepted = [members[j] for j in batch.accepted]
    keys = [records.keys[decoded.rows[i]] for i in accepted]
    ids = request_ids(records, decoded, accepted)
    if batch.starts is not None:  # OIP requests own several rows: their key and id repeat
        counts = np.diff(batch.starts).tolist()
        keys = [k for k, c in zip(keys, counts, strict=True) for _ in range(c)]
        ids = [i for i, c in zip(ids, counts, strict=True) for _ in range(c)]
    done = run_graph(spec, batch.matrix, keys, ids, context.catalog.route, run.infer, context.lookup, context.clock)
    scored.stages.extend(done.stats)
    return done.result, done.refused


def outcome_counts(
    scored: ScoredBatch, sent: list[int] | None
) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
    """Requests per (model, version, outcome) and dead letters per reason, over the rows ``sent`` (None: all).

    Rows skipped by the read-back rule were answered by an earlier owner and are not counted again.
    """
    counts: dict[tuple[str, str, str], int] = {}
    reasons: dict[str, int] = {}
    sent_set = None if sent is None else set(sent)
    for summary in scored.models:
        count = len(summary.rows) if sent_set is None else sum(1 for r in summary.rows if r in sent_set)
        if count:
            key = (summary.card.name, str(summary.card.version), "prediction")
            counts[key] = counts.get(key, 0) + count
    for row, error in scored.errors.items():
        if sent_set is not None and row not in sent_set:
            continue
        reasons[error.reason] = reasons.get(error.reason, 0) + 1
        name, _, version = scored.error_models.get(row, "").partition("@")
        key = (name, version, "dead_letter")
        counts[key] = counts.get(key, 0) + 1
    return counts, reasons


def sent_scores(summary: ModelSummary, sent: list[int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The scores (and labels) of ``summary`` over the rows ``sent`` (None: all)."""
    if sent is None:
        return summary.scores, summary.labels
    mask = np.isin(summary.score_rows, np.asarray(sent, dtype=np.int64))
    return summary.scores[mask], summary.labels[mask] if summary.labels is not None else None
