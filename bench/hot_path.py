"""The per-row Python of the hot path: ``score_records`` + ``output_records`` over 10,000-row batches of the shipped
``fraud`` model, step by step and whole, before against after, interleaved in one run.

    .venv/bin/python bench/hot_path.py [--rows 10000] [--rounds 7] [--before-code DIR]

Steps (in this process, one round of each variant after the other, ``--rounds`` times; medians): each step's
earlier implementation is kept here, verbatim in what it computes, beside the checkout's:

- ascii: the decoder's ASCII test of a batch, ``bytes.isascii`` per value against ``b"".join(values).isascii()``
  (an alternative to the copy, measured and not taken: the copy is the faster);
- decode: the batch decoded into ``PlainRequest`` (a dict per request, GC-tracked) against ``typed_decoder``;
- features: ``itemgetter`` tuples per row + ``np.array`` against one ``np.fromiter`` per feature;
- encode: row lists (``row_columns``) + a second ``%`` format to close each body, against the result's arrays
  (a 2-D output in one slot per column) + one C-level concatenation;
- headers: a list and a formatted offset per row against the offsets' digits from one encoder call.

Whole path (with ``--before-code DIR``, a checkout of the earlier commit: ``git worktree add DIR COMMIT``): each
round runs the whole path in a fresh interpreter of each checkout, alternating; the garbage collector is on, as
in a worker. Figures are for comparing, on the machine of the run (a shared machine makes them noisy: compare
ratios, not absolute times). Appends to ``bench/results/hot_path.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import operator
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from common import ROOT, record

WHOLE = """
import sys, time, json, pathlib
import numpy as np
from streamer.adapters import model_repository
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.core.output_records import output_records
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records
from streamer.synthetic import synthetic_requests
rows, batches = int(sys.argv[1]), int(sys.argv[2])
scan = model_repository.scan(pathlib.Path(sys.argv[3]), 1)
catalog = Catalog({n: {v: m.card for v, m in vs.items()} for n, vs in scan.loaded.items()}, "fraud", {}, {})
infer = OnnxScorer(scan.loaded).infer
messages = list(synthetic_requests(rows, keys=2000, seed=1))
records = Records("requests", 3, list(range(1000, 1000 + rows)), [m.key for m in messages],
                  [m.value for m in messages], [int(time.time() * 1000)] * rows, [None] * rows)
times = []
for _ in range(batches + 1):
    started = time.perf_counter()
    output_records(score_records(records, catalog, infer), None, time.time() * 1000, 1_000_000)
    times.append(time.perf_counter() - started)
print(json.dumps(times[1:]))
"""


class OldPlainRequest(msgspec.Struct):
    """``requests.PlainRequest`` before: GC-tracked, its features a dict."""

    features: dict[str, float]
    inputs: Any = msgspec.UNSET
    id: str | None = None
    model: str | None = None


def median_ms(function: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def steps(rows: int, rounds: int) -> dict[str, dict[str, float]]:
    from streamer.adapters import model_repository
    from streamer.adapters.onnx_scorer import OnnxScorer
    from streamer.core import features, outputs, requests
    from streamer.core.headers import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC, source_headers
    from streamer.core.routing import Catalog
    from streamer.core.scoring import score_records
    from streamer.core.types import Records
    from streamer.synthetic import synthetic_requests

    scan = model_repository.scan(ROOT / "models", 1)
    catalog = Catalog({n: {v: m.card for v, m in vs.items()} for n, vs in scan.loaded.items()}, "fraud", {}, {})
    card = catalog.resolve("fraud")
    infer = OnnxScorer(scan.loaded).infer
    messages = list(synthetic_requests(rows, keys=2000, seed=1))
    values = [m.value for m in messages]
    offsets = list(range(10**9, 10**9 + rows))
    records = Records.of("requests", 3, offsets, values, timestamps_ms=[0] * rows)
    scored = score_records(records, catalog, infer)
    summary = scored.models[0]
    result, ids = summary.result, summary.ids
    plain = msgspec.json.Decoder(OldPlainRequest)
    dicts = [wire.features for wire in requests.decode_requests(values).wires]
    getter = operator.itemgetter(*card.features)
    close = b"%s," + msgspec.json.encode(outputs.CLOSING) + b":%s}"
    topic_header, partition_header = (SOURCE_TOPIC, b"requests"), (SOURCE_PARTITION, b"3")

    def old_encode() -> list[bytes]:
        bodies = outputs.encode_single_predictions(ids, "fraud", "1", outputs.row_columns(result), "t", 3, offsets)
        latencies = np.round(1e12 - np.zeros(rows), 3)
        texts = outputs._json_lines(latencies.tolist())
        return [close % pair for pair in zip(bodies, texts, strict=True)]

    def new_encode() -> list[bytes]:
        bodies = outputs.encode_single_predictions(ids, "fraud", "1", outputs.result_fields(result), "t", 3, offsets)
        return outputs.finish_predictions(bodies, [0] * rows, 1e12)[0]

    assert old_encode() == new_encode()
    pairs = {
        "ascii": (lambda: all(map(bytes.isascii, values)), lambda: b"".join(values).isascii()),
        "decode": (
            lambda: list(map(plain.decode, values)),
            lambda: list(map(requests.typed_decoder(card.features).decode, values)),
        ),
        "features": (
            lambda: np.array(list(map(getter, dicts)), dtype=np.float64),
            lambda: features._plain_rows(card, dicts, True),
        ),
        "encode": (old_encode, new_encode),
        "headers": (
            lambda: [[topic_header, partition_header, (SOURCE_OFFSET, b"%d" % o)] for o in offsets],
            lambda: source_headers("requests", 3, offsets),
        ),
    }
    found: dict[str, dict[str, float]] = {}
    for name, (before, after) in pairs.items():
        old, new = [], []
        for _ in range(rounds):
            old.append(median_ms(before, 3))
            new.append(median_ms(after, 3))
        found[name] = {"before_ms": statistics.median(old), "after_ms": statistics.median(new)}
    return found


def whole(code: str, rows: int, batches: int) -> list[float]:
    result = subprocess.run(
        [sys.executable, "-c", WHOLE, str(rows), str(batches), str(ROOT / "models")],
        cwd="/",  # not the checkout: "-c" puts the working directory first on sys.path
        env={"PYTHONPATH": code, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"whole path failed in {code}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=5, help="Batches per interpreter in the whole-path rounds.")
    parser.add_argument("--before-code", default=None, help="The earlier checkout, for the whole-path rounds.")
    args = parser.parse_args()
    found = steps(args.rows, args.rounds)
    print(f"\n{args.rows:,} rows per batch, medians of {args.rounds} interleaved rounds\n")
    print(f"{'step':12} {'before ms':>10} {'after ms':>10} {'ratio':>7}")
    for name, figures in found.items():
        figures["ratio"] = round(figures["before_ms"] / figures["after_ms"], 2)
        print(f"{name:12} {figures['before_ms']:10.2f} {figures['after_ms']:10.2f} {figures['ratio']:7.2f}")
    results: dict[str, Any] = {"rows": args.rows, "rounds": args.rounds, "steps": found}
    if args.before_code:
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.rounds):
            old += whole(args.before_code, args.rows, args.batches)
            new += whole(str(ROOT), args.rows, args.batches)
        before, after = statistics.median(old) * 1000, statistics.median(new) * 1000
        print(f"{'whole path':12} {before:10.2f} {after:10.2f} {before / after:7.2f}")
        print(f"  ({args.rows / before * 1000:,.0f} -> {args.rows / after * 1000:,.0f} rows/s on one thread)")
        results["whole"] = {"before_ms": before, "after_ms": after, "ratio": round(before / after, 2)}
        results["before"] = args.before_code
    record("hot_path", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
