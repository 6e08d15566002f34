"""One model version's per-row results -> one open prediction body (or a dead letter) per request, and the
columnar summary that the metrics, the prediction log and ``streamer batch``'s tables read.

A JSON request owns one matrix row and gets plain values; an OIP request owns ``batch.rows_of(j)`` and gets
arrays, also for a single row (contract section 2). The common batch -- every request one JSON row -- is
encoded by ``outputs.encode_single_predictions``, a column at a time; any other by ``outputs.open_bodies`` of
one ``Prediction`` per request. A request whose score is not finite is ``scoring-failed``; one with a row a
graph refused (``GraphRun.refused``: its enrichment failed, ``on_failure = "dead-letter"``) is
``enrichment-failed``; one whose prediction would not fit the predictions topic is ``too-large``. Failed
requests leave no trace in the summary.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core import outputs, requests
from streamer.core.cards import ModelCard
from streamer.core.errors import ENRICHMENT_FAILED, SCORING_FAILED, TOO_LARGE, DecodeError
from streamer.core.features import FeatureBatch
from streamer.core.graph.scoring_graph import GraphResult
from streamer.core.headers import RECORD_OVERHEAD_BYTES
from streamer.core.types import Records, pick


@dataclass(slots=True)
class ModelSummary:
    """What one model version made of a batch, for metrics, the prediction log and tables (all columnar).

    ``rows``: batch rows answered with a prediction, ascending, and ``ids`` their request ids.
    ``scores``/``labels``: one per scored matrix row (an OIP request has several), ``score_rows`` the batch row
    of each. ``logged_*``: the single-row predictions, which a label can join (``logged_features``: their
    features as scored, for an online or calibrated model only). ``row_fields()``: every per-row field of the
    envelope over the same scored rows.
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
    ids: list[str] = field(default_factory=list)
    result: GraphResult | None = None
    kept: np.ndarray | None = None  # the result's rows in the summary (None: all of them)

    def row_fields(self) -> dict[str, Any]:
        """The per-row fields (``outputs.ROW_FIELDS``) over the scored rows, as the result holds them (numpy
        arrays, or lists for a rules stage's decisions and reasons; None for a field the result lacks)."""
        if self.result is None:
            return dict.fromkeys(outputs.ROW_FIELDS)
        fields = {name: getattr(self.result, name) for name in outputs.ROW_FIELDS}
        return fields if self.kept is None else {name: _take(value, self.kept) for name, value in fields.items()}


def _take(value: Any, index: np.ndarray) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: _take(column, index) for key, column in value.items()}
    if isinstance(value, np.ndarray):
        return value[index]
    return [value[i] for i in index.tolist()]


@dataclass(slots=True)
class ModelAnswers:
    """Request j of the model's accepted ones sits at batch row ``request_rows[j]``: its open body is
    ``bodies[j]``, unless ``failed[j]`` says why it is a dead letter instead."""

    request_rows: list[int]
    bodies: list[bytes]
    failed: dict[int, DecodeError]
    summary: ModelSummary


_id_of = operator.attrgetter("id")


def request_ids(records: Records, decoded: requests.DecodedRequests, members: list[int]) -> list[str]:
    """The ids of the decoded requests ``members``: each one's own, else the default id (contract section 2)."""
    wires, rows, offsets = decoded.wires, decoded.rows, records.offsets
    ids = list(map(_id_of, pick(wires, members)))  # type: ignore[arg-type]
    if None in ids or "" in ids:
        topic, partition = records.topic, records.partition
        pairs = zip(ids, members, strict=True)
        ids = [rid or requests.default_request_id(topic, partition, offsets[rows[i]]) for rid, i in pairs]
    return ids  # type: ignore[return-value]


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


def answer_requests(
    records: Records,
    decoded: requests.DecodedRequests,
    card: ModelCard,
    members: list[int],
    batch: FeatureBatch,
    result: GraphResult,
    max_output_bytes: int,
    refused: np.ndarray | None = None,
) -> ModelAnswers:
    """Cut the model's per-row results into per-request bodies, encoded a column at a time. ``refused``: per
    result row, the detail of an ``enrichment-failed`` dead letter or None (``GraphRun.refused``)."""
    rows = decoded.rows
    topic, partition, offsets = records.topic, records.partition, records.offsets
    accepted = pick(members, batch.accepted)  # indices into decoded.wires, in batch order
    request_rows = pick(rows, accepted)
    ids = request_ids(records, decoded, accepted)
    run = _ModelRun(card, records, batch, result, accepted, request_rows, ids, decoded.tensors)
    if refused is not None:
        _refuse(run, refused)
    if batch.starts is None and not decoded.tensors:
        finite = np.isfinite(result.score)
        if not finite.all():
            for j in np.flatnonzero(~finite).tolist():
                run.failed.setdefault(j, _non_finite(card))
        offsets_of = pick(offsets, request_rows)
        open_bodies = outputs.encode_single_predictions(
            ids, card.name, str(card.version), outputs.result_fields(result), topic, partition, offsets_of
        )
    else:
        open_bodies = _general_bodies(run)
    limit = max_output_bytes - RECORD_OVERHEAD_BYTES - 256  # headers, key and latency on top
    if open_bodies and max(map(len, open_bodies)) > limit:
        for j, body in enumerate(open_bodies):
            size = len(body) + len(records.keys[request_rows[j]] or b"")
            if size > limit and j not in run.failed:
                run.failed[j] = DecodeError(
                    TOO_LARGE, f"the prediction of {card.ref} has {size} bytes, over the output limit of {limit}"
                )
    return ModelAnswers(request_rows, open_bodies, run.failed, _summarise(run))


def _non_finite(card: ModelCard) -> DecodeError:
    return DecodeError(SCORING_FAILED, f"{card.ref} returned a non-finite score")


def _refuse(run: _ModelRun, refused: np.ndarray) -> None:
    """Fail every request owning a refused row, with that row's detail (one error per distinct detail)."""
    rows = np.flatnonzero(np.not_equal(refused, None))
    if not rows.size:
        return
    owner = rows if run.batch.starts is None else np.searchsorted(run.batch.starts, rows, side="right") - 1
    errors: dict[str, DecodeError] = {}
    for j, row in zip(owner.tolist(), rows.tolist(), strict=True):
        if j in run.failed:
            continue
        detail = refused[row]
        error = errors.get(detail)
        if error is None:
            error = errors[detail] = DecodeError(ENRICHMENT_FAILED, detail)
        run.failed[j] = error


def _general_bodies(run: _ModelRun) -> list[bytes]:
    """Bodies when some requests are OIP (several rows each, arrays per field): one ``Prediction`` per request."""
    columns = outputs.row_columns(run.result)
    finite = np.isfinite(run.result.score)
    card, records = run.card, run.records
    version = str(card.version)
    predictions: list[outputs.Prediction] = []
    for j, i in enumerate(run.accepted):
        start, stop = run.batch.rows_of(j)
        if not finite[start:stop].all() and j not in run.failed:
            run.failed[j] = _non_finite(card)
        source = outputs.Source(records.topic, records.partition, records.offsets[run.request_rows[j]])
        fields = outputs.request_fields(columns, start, stop, arrays=i in run.tensors)
        predictions.append(outputs.Prediction(id=run.ids[j], model=card.name, version=version, source=source, **fields))
    return outputs.open_bodies(predictions)


def _summarise(run: _ModelRun) -> ModelSummary:
    """The model's columns for the metrics and the prediction log, without the requests that failed."""
    batch, result, accepted, request_rows, failed = run.batch, run.result, run.accepted, run.request_rows, run.failed
    summary = ModelSummary(run.card, result=result)
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
    summary.rows, summary.ids = request_rows, run.ids
    if failed:
        bad = np.fromiter(failed, dtype=np.int64, count=len(failed))
        keep = ~np.isin(owner if owner is not None else np.arange(len(accepted)), bad)
        summary.kept = np.flatnonzero(keep)
        scores, score_rows = scores[keep], score_rows[keep]
        labels = labels[keep] if labels is not None else None
        singles = [j for j in (singles if singles is not None else range(len(accepted))) if j not in failed]
        summary.rows = [row for j, row in enumerate(request_rows) if j not in failed]
        summary.ids = [rid for j, rid in enumerate(run.ids) if j not in failed]
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
    return summary
