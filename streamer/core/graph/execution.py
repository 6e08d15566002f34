"""Running a bound scoring graph (``core.graph.spec``) over one batch, a stage at a time, on columns.

The batch is a dict of columns (``float64`` arrays of one value per row; the request key as text under
``"key"``), filled from the request features the graph reads and grown by each stage in topological order:

- ``model``: one inference call per model version over the stage's rows (a canary split by request key, as
  for a request naming the model, so one key always meets the same version);
- ``transform``: ``core.transforms.apply``;
- ``enrich``: one injected lookup for the whole batch (``Lookup``: Redis in the worker), a default for every
  missing key or field and for every row when the store fails -- never failing the batch. Each row's outcome
  (``stages.STORE``, ``MISSING`` or ``FAILED``) is the text column ``<stage>.enrichment``, which rules can
  read, and the worst over the graph's enrichments is the prediction's ``enrichment``. A row whose lookup
  failed then gets what the stage's ``on_failure`` says: its defaults (``defaults``), a dead letter
  (``dead-letter``: ``GraphRun.refused``, an ``enrichment-failed`` dead letter), or the decision ``review``
  whatever the rules decided (``review``), with the reason ``review_reason``;
- ``ensemble``: the members' score columns combined (mean, weighted, vote, max) or fed to a stacking model;
- ``cascade``: the first model on every row; the second only on the rows whose first score lies in
  [low, high] (unsure), results merged back in row order with ``<stage>.path`` = "first" or "then";
- ``rules``: ``core.rules.evaluate`` -- the decision and reasons of each row.

Inference, routing, lookups and the clock are injected, so this module stays pure and is tested with plain
functions. Per-stage row counts and seconds are returned for the metrics (a ``stage`` label).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.core.cards import ModelCard
from streamer.core.errors import DecodeError, ScoringError
from streamer.core.graph import rules as rules_module
from streamer.core.graph import transforms as transforms_module
from streamer.core.graph.scoring_graph import GraphResult, Infer, ScoringGraph
from streamer.core.graph.spec import GraphSpec
from streamer.core.graph.stages import (
    DEAD_LETTER,
    ENRICHMENT_OUTCOMES,
    FAILED,
    MISSING,
    REVIEW,
    STORE,
    Stage,
    member_weights,
)
from streamer.core.routing import Split


@dataclass(frozen=True, slots=True)
class Enrichment:
    """What a lookup returns: ``values`` [rows, features] with defaults filled in, ``found`` per row."""

    values: np.ndarray
    found: np.ndarray
    error: str | None = None


Lookup = Callable[[Stage, Sequence[bytes | None]], Enrichment]
Route = Callable[[str], "ModelCard | Split"]


@dataclass(frozen=True, slots=True)
class StageStats:
    graph: str
    stage: str  # a cascade reports "<stage>/first" and "<stage>/then"
    rows: int
    seconds: float
    misses: int = 0  # enrichment: rows that got defaults (missing or failed)
    failed: bool = False  # enrichment: the store did not answer
    failed_rows: int = 0  # enrichment: rows whose features could not be read, handled as ``on_failure`` says
    on_failure: str = ""  # enrichment: its on_failure


def stage_labels(spec: GraphSpec) -> list[tuple[str, str | None]]:
    """(``stage`` of every ``StageStats`` a run of ``spec`` can report, the ``on_failure`` of an enrichment or
    None for any other stage): known at load, so that the graph's counters start at 0 instead of appearing with
    their first row."""
    labels: list[tuple[str, str | None]] = []
    for name in spec.order:
        stage = spec.stages[name]
        if stage.kind == "cascade":
            labels += [(f"{name}/first", None), (f"{name}/then", None)]
        else:
            labels.append((name, stage.on_failure if stage.kind == "enrich" else None))
    return labels


@dataclass(slots=True)
class GraphRun:
    """A batch's result, per-stage stats, and ``refused``: per row, the detail of its ``enrichment-failed``
    dead letter (an enrichment with ``on_failure = "dead-letter"`` failed for it) or None; None when no row is."""

    result: GraphResult
    stats: list[StageStats] = field(default_factory=list)
    refused: np.ndarray | None = None


_OUTCOME_NAMES = np.array(ENRICHMENT_OUTCOMES, dtype=object)
_CODE = {name: code for code, name in enumerate(ENRICHMENT_OUTCOMES)}


def enrichment_outcomes(enriched: Enrichment, keys: Sequence[bytes | None]) -> np.ndarray:
    """Each row's outcome code (an index into ``ENRICHMENT_OUTCOMES``, worst highest): ``FAILED`` where the
    lookup failed and the row has a key, ``MISSING`` where it has none or the store knows no such entity,
    ``STORE`` where its features were read."""
    found = np.asarray(enriched.found, dtype=bool)
    codes = np.where(found, _CODE[STORE], _CODE[MISSING]).astype(np.int8)
    if enriched.error is not None:
        has_key = np.fromiter((key is not None for key in keys), dtype=bool, count=len(keys))
        codes[has_key & ~found] = _CODE[FAILED]
    return codes


def review_reason(stage: str) -> str:
    """The reason of a decision forced to ``review`` by an enrichment that failed (stable, for counting)."""
    return f"enrichment {stage!r} failed: the feature store did not answer"


@dataclass(slots=True)
class _Enrichments:
    """The graph's enrichments over one batch so far: each row's worst outcome code, and what the stages'
    ``on_failure`` made of the rows they failed -- a dead letter's detail (``refused``) or a review's reason
    (``forced``), the first stage's in execution order winning."""

    rows: int
    worst: np.ndarray | None = None
    refused: np.ndarray | None = None
    forced: np.ndarray | None = None

    def add(self, graph: str, stage: Stage, codes: np.ndarray, error: str | None) -> int:
        """Record one stage's outcome codes; returns how many rows it failed."""
        self.worst = codes if self.worst is None else np.maximum(self.worst, codes)
        failed = codes == _CODE[FAILED]
        count = int(np.count_nonzero(failed))
        if count and stage.on_failure == DEAD_LETTER:
            detail = f"graph {graph} stage {stage.name!r}: the entity features could not be read ({error})"
            self.refused = _first_wins(self.refused, failed, detail, self.rows)
        elif count and stage.on_failure == REVIEW:
            self.forced = _first_wins(self.forced, failed, review_reason(stage.name), self.rows)
        return count

    def overrule(self, decision: list[str] | None, reasons: list[list[str]] | None) -> None:
        """``on_failure = "review"``: the rules' decision and reasons replaced on the rows a stage failed."""
        if self.forced is None:
            return
        assert decision is not None and reasons is not None  # parse_graph refuses review without rules
        for i in np.flatnonzero(np.not_equal(self.forced, None)).tolist():
            decision[i], reasons[i] = REVIEW, [self.forced[i]]

    def outcomes(self) -> np.ndarray | None:
        """The prediction's ``enrichment`` per row (None: the graph has no enrich stage)."""
        return _OUTCOME_NAMES[self.worst] if self.worst is not None else None


def _first_wins(texts: np.ndarray | None, rows: np.ndarray, text: str, size: int) -> np.ndarray:
    texts = np.full(size, None, dtype=object) if texts is None else texts
    texts[rows & np.equal(texts, None)] = text
    return texts


def no_lookup(stage: Stage, keys: Sequence[bytes | None]) -> Enrichment:
    """Where no feature store is configured: every row gets the defaults, and a row with a key counts as failed
    (its features were not read), so the stage's ``on_failure`` applies as when the store is down."""
    rows = len(keys)
    defaults = np.array([d for _, d in stage.defaults], dtype=np.float64)
    return Enrichment(np.tile(defaults, (rows, 1)), np.zeros(rows, dtype=bool), "no feature store configured")


def key_texts(keys: Sequence[bytes | None]) -> np.ndarray:
    """The request keys as text for rules (non-UTF-8 bytes as backslash escapes); None stays None."""
    return np.array([None if k is None else k.decode("utf-8", "backslashreplace") for k in keys], dtype=object)


def _feature_keys(column: np.ndarray) -> list[bytes | None]:
    """A numeric request feature used as an entity key: integral values as integers ("42", not "42.0")."""
    out: list[bytes | None] = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            out.append(None)
        elif isinstance(value, float) and value.is_integer():
            out.append(str(int(value)).encode())
        else:
            out.append(str(value).encode())
    return out


def run_graph(
    spec: GraphSpec,
    matrix: np.ndarray,
    keys: Sequence[bytes | None],
    ids: Sequence[str],
    route: Route,
    infer: Infer,
    lookup: Lookup = no_lookup,
    clock: Callable[[], float] = lambda: 0.0,
) -> GraphRun:
    """Score ``matrix`` (one row per request row, columns = ``spec.inputs``); ``keys``/``ids`` per row."""
    rows = matrix.shape[0]
    columns: dict[str, np.ndarray] = {name: matrix[:, i].astype(np.float64) for i, name in enumerate(spec.inputs)}
    columns["key"] = key_texts(keys)
    run = GraphRun(GraphResult(np.empty(0), None, {}))
    outputs: dict[str, np.ndarray] = {}
    decision: list[str] | None = None
    reasons: list[list[str]] | None = None
    everyone = np.arange(rows)
    enrichments = _Enrichments(rows)
    for name in spec.order:
        stage = spec.stages[name]
        started = clock()
        if stage.kind == "model":
            assert stage.model is not None
            score, label, model_of = _score_model(stage.model, everyone, columns, keys, ids, route, infer)
            _put_scoring(columns, outputs, name, score, label)
            outputs[f"{name}.model"] = model_of
        elif stage.kind == "transform":
            columns.update(transforms_module.apply(stage.ops, columns, rows))
        elif stage.kind == "enrich":
            lookup_keys = list(keys) if stage.key == "key" else _feature_keys(columns[stage.key])
            enriched = lookup(stage, lookup_keys)
            for k, (feature, _) in enumerate(stage.defaults):
                columns[feature] = enriched.values[:, k].astype(np.float64)
            codes = enrichment_outcomes(enriched, lookup_keys)
            columns[f"{name}.enrichment"] = _OUTCOME_NAMES[codes]
            failed_rows = enrichments.add(spec.ref, stage, codes, enriched.error)
            misses = int(rows - np.count_nonzero(enriched.found))
            took = clock() - started
            failure = enriched.error is not None
            run.stats.append(StageStats(spec.name, name, rows, took, misses, failure, failed_rows, stage.on_failure))
            continue
        elif stage.kind == "ensemble":
            score, label = _ensemble(stage, columns, keys, ids, route, infer)
            _put_scoring(columns, outputs, name, score, label)
        elif stage.kind == "cascade":
            first_started = started
            assert stage.first is not None and stage.then is not None
            s1, l1, m1 = _score_model(stage.first, everyone, columns, keys, ids, route, infer)
            unsure = np.flatnonzero((s1 >= stage.low) & (s1 <= stage.high))
            run.stats.append(StageStats(spec.name, f"{name}/first", rows, clock() - first_started))
            then_started = clock()
            score, label, model_of = s1.copy(), l1.copy(), m1.copy()
            path = np.full(rows, "first", dtype=object)
            if unsure.size:
                s2, l2, m2 = _score_model(stage.then, unsure, columns, keys, ids, route, infer)
                score[unsure], label[unsure], model_of[unsure], path[unsure] = s2, l2, m2, "then"
            _put_scoring(columns, outputs, name, score, label)
            columns[f"{name}.path"] = path
            outputs[f"{name}.path"] = path
            outputs[f"{name}.model"] = model_of
            run.stats.append(StageStats(spec.name, f"{name}/then", int(unsure.size), clock() - then_started))
            continue
        else:  # rules
            assert stage.rules is not None
            decided = rules_module.evaluate(stage.rules, columns, rows)
            decision = [decided.decisions[i] for i in decided.decision.tolist()]
            reasons = decided.reasons
        run.stats.append(StageStats(spec.name, name, rows, clock() - started))
    enrichments.overrule(decision, reasons)
    score = columns[spec.output]
    label = columns[f"{spec.output}.label"].astype(np.int64)
    run.result = GraphResult(score, label, outputs, decision, reasons, enrichments.outcomes())
    run.refused = enrichments.refused
    return run


def _put_scoring(
    columns: dict[str, np.ndarray], outputs: dict[str, np.ndarray], name: str, score: np.ndarray, label: np.ndarray
) -> None:
    columns[name] = score
    columns[f"{name}.label"] = label.astype(np.float64)
    outputs[name] = score


def _score_model(
    ref: str,
    rows: np.ndarray,
    columns: dict[str, np.ndarray],
    keys: Sequence[bytes | None],
    ids: Sequence[str],
    route: Route,
    infer: Infer,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels and ``name@version`` of ``rows`` by the model ``ref`` (a canary split by key applies).

    A model that no longer resolves (removed by hot reload) or no longer finds its features fails the batch's
    rows of this graph as ``ScoringError`` (``scoring-failed`` dead letters), like a failed inference."""
    try:
        target = route(ref)
    except DecodeError as exc:
        raise ScoringError(f"graph model {ref}: {exc.detail}") from None
    if isinstance(target, Split):
        chosen = np.asarray(target.assign([keys[r] for r in rows.tolist()], [ids[r] for r in rows.tolist()]))
        groups = [(card, np.flatnonzero(chosen == k)) for k, card in enumerate(target.cards)]
    else:
        groups = [(target, np.arange(rows.size))]
    score = np.empty(rows.size, dtype=np.float64)
    label = np.empty(rows.size, dtype=np.int64)
    model_of = np.empty(rows.size, dtype=object)
    for card, members in groups:
        if not members.size:
            continue
        picked = rows[members]
        missing = [f for f in card.features if f not in columns]
        if missing:
            raise ScoringError(f"graph model {card.ref} reads {missing[0]!r}, which no input or earlier stage provides")
        matrix = np.column_stack([columns[f][picked] for f in card.features]).astype(np.float32)
        result = ScoringGraph.single(card).run(matrix, infer)
        score[members] = result.score
        label[members] = result.label if result.label is not None else (result.score >= card.threshold)
        model_of[members] = card.ref
    return score, label, model_of


def _ensemble(
    stage: Stage,
    columns: dict[str, np.ndarray],
    keys: Sequence[bytes | None],
    ids: Sequence[str],
    route: Route,
    infer: Infer,
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.column_stack([columns[m] for m in stage.members])
    if stage.method in ("mean", "weighted"):
        score = scores @ np.asarray(member_weights(stage))
    elif stage.method == "max":
        score = scores.max(axis=1)
    elif stage.method == "vote":
        votes = np.column_stack([columns[f"{m}.label"] for m in stage.members])
        score = votes.mean(axis=1)
        return score, (score > 0.5).astype(np.int64)  # a strict majority of positive votes
    else:  # stack: the members' scores are the stacking model's features, in member order
        assert stage.model is not None
        stacked = dict(columns)
        every = np.arange(scores.shape[0])
        score, label, _ = _score_model(stage.model, every, stacked, keys, ids, route, infer)
        return score, label
    return score, (score >= stage.threshold).astype(np.int64)
