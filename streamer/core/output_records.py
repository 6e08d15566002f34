"""A released batch -> the records to write: predictions and dead letters, keyed, with their headers.

Pure: the scored batch and the ledger's release say what leaves; this module says how it looks on the wire
(contract sections 3 and 5). Every output goes to the request's partition number, keyed byte for byte like
the request, in request-offset order within each output topic, and carries the request's coordinates in the
``streamer-source-*`` headers (what the read-back recovers from). A dead letter's value is the request's
original bytes -- cut to fit the dead-letter topic's limit only when it would not fit there, with headers
``streamer-original-size`` and ``streamer-original-sha256`` (``headers.fit_dead_letter``). The prediction values
are the scoring path's open bodies closed with ``latency_ms`` (``outputs.finish_predictions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.core.headers import dead_letter_headers, fit_dead_letter, source_headers
from streamer.core.outputs import finish_predictions
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Headers, SourceRef, pick


@dataclass(slots=True)
class TopicRecords:
    """Parallel columns of the records bound for one output topic-partition, in the order to send them."""

    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[Headers] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class OutputRecords:
    partition: int
    predictions: TopicRecords
    dead_letters: TopicRecords
    latencies_ms: np.ndarray  # of the predictions, in order
    cut: int = 0  # dead letters whose value was cut to fit the dead-letter topic
    # The challengers' predictions of the same rows, for the shadow topic (same keys, same headers).
    shadow: TopicRecords = field(default_factory=TopicRecords)


def output_records(
    scored: ScoredBatch, send: list[int] | None, now_ms: float, max_dead_letter_bytes: int
) -> OutputRecords:
    """The outputs of the rows ``send`` (None: every row) of ``scored``, as of wall-clock ``now_ms``."""
    records = scored.records
    offsets, keys, bodies, errors = records.offsets, records.keys, scored.bodies, scored.errors
    rows = range(len(records)) if send is None else send
    if errors:
        prediction_rows = [row for row in rows if bodies[row] is not None]
        dead_rows = [row for row in rows if bodies[row] is None]
    else:
        prediction_rows, dead_rows = list(rows), []
    # The common batch -- every row a prediction, all of them sent -- takes the columns as they are.
    values, latencies = finish_predictions(
        pick(bodies, prediction_rows),  # type: ignore[arg-type]
        pick(records.timestamps_ms, prediction_rows),
        now_ms,
    )
    predictions = TopicRecords(
        pick(keys, prediction_rows),
        values,  # type: ignore[arg-type]
        source_headers(records.topic, records.partition, pick(offsets, prediction_rows)),
    )
    out = OutputRecords(records.partition, predictions, TopicRecords(), latencies)
    if scored.shadow is not None:
        shadow_bodies = scored.shadow.bodies
        shadow_rows = [row for row in prediction_rows if shadow_bodies[row] is not None]
        shadow_values, _ = finish_predictions(
            [shadow_bodies[row] for row in shadow_rows],  # type: ignore[misc]
            [records.timestamps_ms[row] for row in shadow_rows],
            now_ms,
        )
        out.shadow = TopicRecords(
            [keys[row] for row in shadow_rows],
            shadow_values,  # type: ignore[arg-type]
            source_headers(records.topic, records.partition, [offsets[row] for row in shadow_rows]),
        )
    for row in dead_rows:
        source = SourceRef(records.topic, records.partition, offsets[row])
        headers = dead_letter_headers(errors[row], source, records.headers[row])
        value, headers = fit_dead_letter(keys[row], records.values[row], headers, max_dead_letter_bytes)
        if value is not records.values[row]:
            out.cut += 1
        out.dead_letters.keys.append(keys[row])
        out.dead_letters.values.append(value)
        out.dead_letters.headers.append(headers)
    return out
