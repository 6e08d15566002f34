"""One micro-batch of raw request messages -> one outcome per message, in the same order.

The whole path of a batch, as pure code: decode every value (``envelope``), route each request to a model
version (``routing``), build one feature matrix per model (``features``), run that model's scoring graph
(``graph``) once per batch, and cut the per-row results back into per-request prediction bodies. Each message
ends as exactly one ``Outcome``: a prediction body, or a ``DecodeError`` whose reason is the dead-letter
reason. A bad message never fails its batch-mates; a failed model run fails only the rows of that model, as
``scoring-failed``; a score that is not finite is ``scoring-failed`` for that row.

``latency_ms`` is not set here: it is measured when the prediction is produced (contract section 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.core import envelope
from streamer.core.cards import ModelCard
from streamer.core.errors import SCORING_FAILED, DecodeError, ScoringError
from streamer.core.features import build_matrix
from streamer.core.graph import Infer, ScoringGraph
from streamer.core.routing import Catalog
from streamer.core.types import RequestBody, SourceRef


@dataclass(frozen=True, slots=True)
class Request:
    """A consumed request message, as much of it as scoring needs."""

    source: SourceRef
    value: bytes | None
    model_header: str | None = None
    timestamp_ms: int = 0


@dataclass(slots=True)
class Outcome:
    """Exactly one of ``body`` (a prediction without ``latency_ms``) or ``error`` is set."""

    source: SourceRef
    body: dict[str, Any] | None = None
    error: DecodeError | None = None
    model: str | None = None  # "name@version" when a model was chosen (metrics)
    rows: int = 0
    # The row's features as scored, for a single-row prediction of an online model: a label learns from them.
    features: list[float] | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = envelope.DEFAULT_MAX_MESSAGE_BYTES
    max_rows: int = envelope.DEFAULT_MAX_ROWS


def score_batch(
    requests: Sequence[Request],
    catalog: Catalog,
    infer: Infer,
    graph_for: Callable[[ModelCard], ScoringGraph] = ScoringGraph.single,
    limits: Limits = Limits(),
    observe_matrix: Callable[[ModelCard, np.ndarray], None] | None = None,
) -> list[Outcome]:
    """``observe_matrix`` sees each model's accepted feature matrix before scoring (drift statistics)."""
    outcomes = [Outcome(r.source) for r in requests]
    groups: dict[str, tuple[ModelCard, list[int], list[RequestBody]]] = {}
    for position, request in enumerate(requests):
        try:
            body = envelope.decode_request(request.value, max_bytes=limits.max_message_bytes, max_rows=limits.max_rows)
            card = catalog.resolve(body.model if body.model is not None else request.model_header)
        except DecodeError as exc:
            outcomes[position].error = exc
            continue
        outcomes[position].model = card.ref
        group = groups.setdefault(card.ref, (card, [], []))
        group[1].append(position)
        group[2].append(body)
    for card, positions, bodies in groups.values():
        _score_group(card, positions, bodies, outcomes, infer, graph_for(card), observe_matrix)
    return outcomes


def _score_group(
    card: ModelCard,
    positions: list[int],
    bodies: list[RequestBody],
    outcomes: list[Outcome],
    infer: Infer,
    graph: ScoringGraph,
    observe_matrix: Callable[[ModelCard, np.ndarray], None] | None,
) -> None:
    batch = build_matrix(card, bodies)
    for index, error in batch.errors:
        outcomes[positions[index]].error = error
    if not batch.spans:
        return
    if observe_matrix is not None:
        observe_matrix(card, batch.matrix)
    try:
        result = graph.run(batch.matrix, infer)
    except ScoringError as exc:
        for span in batch.spans:
            outcomes[positions[span.position]].error = DecodeError(SCORING_FAILED, exc.detail)
        return
    scores = result.score.tolist()
    labels = result.label.tolist() if result.label is not None else None
    outputs = {name: value.tolist() for name, value in result.outputs.items()}
    version = str(card.version)
    for span in batch.spans:
        outcome = outcomes[positions[span.position]]
        body = bodies[span.position]
        start, stop = span.start, span.stop
        row_scores = scores[start:stop]
        if not all(math.isfinite(s) for s in row_scores):
            outcome.error = DecodeError(SCORING_FAILED, f"{card.ref} returned a non-finite score")
            continue
        if body.is_oip:
            score: Any = row_scores
            label: Any = labels[start:stop] if labels is not None else None
            row_outputs = {name: value[start:stop] for name, value in outputs.items()}
        else:
            score = row_scores[0]
            label = labels[start] if labels is not None else None
            row_outputs = {name: value[start] for name, value in outputs.items()}
            if card.online is not None:
                outcome.features = batch.matrix[start].tolist()
        source = outcome.source
        outcome.rows = stop - start
        outcome.body = {
            "id": body.id if body.id is not None else source.default_id,
            "model": card.name,
            "version": version,
            "score": score,
            "label": label,
            "outputs": row_outputs,
            "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        }
