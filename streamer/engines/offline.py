"""Offline scoring of a JSONL file (``streamer batch``, contract section 1): the worker's decoding, routing,
models and encoding, fed from a file instead of a topic.

Each chunk of lines is one ``Records`` (topic ``file:<name>``, partition 0, the line index as offset) scored
by ``core.scoring.score_records`` -- the same function the worker runs. Predictions are written in input
order without ``latency_ms`` (there is no Kafka timestamp to measure from); dead letters as
``{"line", "error", "detail"}`` with their 1-based line number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from streamer.core.envelope import model_header
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Records


@dataclass(slots=True)
class OfflineCounts:
    predictions: int = 0
    dead_letters: int = 0


def chunks(path: Path, size: int, model: str | None) -> Iterator[Records]:
    """Non-blank lines of ``path`` in chunks of ``size``; ``model`` applies to lines that name none."""
    headers = model_header(model)
    records = Records.of(f"file:{path.name}", 0, [], [])
    with open(path, "rb") as lines:
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            records.offsets.append(number)
            records.values.append(line.rstrip(b"\r\n"))
            records.keys.append(None)
            records.timestamps_ms.append(0)
            records.headers.append(headers)
            if len(records) >= size:
                yield records
                records = Records.of(records.topic, 0, [], [])
    if len(records):
        yield records


def score_file(
    path: Path,
    score: Callable[[Records], ScoredBatch],
    predictions: IO[str],
    dead_letters: IO[str],
    batch_size: int = 1024,
    model: str | None = None,
) -> OfflineCounts:
    counts = OfflineCounts()
    for records in chunks(path, batch_size, model):
        scored = score(records)
        for row, body in enumerate(scored.bodies):
            if body is not None:
                predictions.write((body + b"}").decode() + "\n")
                counts.predictions += 1
            else:
                error = scored.errors[row]
                entry = {"line": records.offsets[row] + 1, "error": error.reason, "detail": error.detail}
                dead_letters.write(json.dumps(entry) + "\n")
                counts.dead_letters += 1
    return counts
