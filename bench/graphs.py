"""Scoring graphs against single models, in process, on the shipped data: rows/s, accuracy, cascade share.

The worker's scoring function (``core.scoring.score_records``) on batches of ``--batch`` requests (JSON bytes,
as from Kafka), each row of every configuration in the same run, ``--repeat`` times interleaved:
- ``fraud`` (the GBDT alone: the always-heavy baseline) and ``fraud-online`` (the cheap model alone);
- ``fraud-graph`` without a feature store (enrichment defaults) and with the embedded redis-server holding an
  account for every key (one pipelined round trip per batch);
- ``fraud-ensemble`` (mean of three models);
- ``one-stage`` (a graph with the GBDT as its only stage: the graph machinery's own overhead);
- ``cascade-only`` (the fraud graph's two phases alone, against the always-heavy GBDT).
Accuracy is at each card's threshold against ``synthetic.labels`` of the same rows; the cascade share is the
rows reaching the second phase (``phases/then`` over ``phases/first``).

    .venv/bin/python bench/graphs.py [--rows 50000] [--batch 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, embedded_stack, record

from streamer import config, synthetic
from streamer.adapters import graph_repository
from streamer.adapters.redis_entities import EntityFeatureStore
from streamer.core.graph.spec import parse_graph
from streamer.core.scoring import score_records
from streamer.core.types import Records
from streamer.wiring.models import entity_lookup, load_models

ONE_STAGE = {
    "name": "one-stage",
    "inputs": list(synthetic.FEATURES),
    "output": "gbdt",
    "stages": {"gbdt": {"kind": "model", "model": "fraud"}},
}


CASCADE_ONLY = {
    "name": "cascade-only",
    "inputs": list(synthetic.FEATURES),
    "output": "phases",
    "stages": {"phases": {"kind": "cascade", "first": "fraud-online", "then": "fraud", "low": 0.25, "high": 0.6}},
}


def batches(rows: np.ndarray, model: str, size: int, keys: int) -> list[Records]:
    out = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        values = [
            json.dumps({"id": f"b{start + i}", "model": model, "features": synthetic.features_of(r)}).encode()
            for i, r in enumerate(chunk)
        ]
        keys_of = [f"acct-{(start + i) % keys:06d}".encode() for i in range(len(chunk))]
        out.append(Records.of("requests", 0, list(range(start, start + len(chunk))), values, keys_of))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=5_000)
    args = parser.parse_args()
    x = synthetic.transactions(args.rows, seed=2026)
    truth = synthetic.labels(x, seed=2026)
    with embedded_stack() as stack, tempfile.TemporaryDirectory() as state:
        settings = config.load(
            None,
            environ={"STREAMER_MODELS_DIR": str(ROOT / "examples" / "models"), "STREAMER_STATE_DIR": state},
        )
        models = load_models(settings).serving.current
        scorer = models.scorer
        catalog = graph_repository.with_graphs(
            models.catalog, [parse_graph(ONE_STAGE, "bench"), parse_graph(CASCADE_ONLY, "bench")]
        )
        redis_settings = config.load(
            None,
            environ={
                "STREAMER_MODELS_DIR": str(ROOT / "examples" / "models"),
                "STREAMER_REDIS_URL": stack.redis_url,
                "STREAMER_STATE_DIR": state,
            },
        )
        loader = EntityFeatureStore.from_settings(redis_settings.redis)
        rng = np.random.default_rng(1)
        accounts = [
            (
                f"acct-{k:06d}".encode(),
                {"chargebacks_90d": float(rng.poisson(0.3)), "flagged": float(rng.random() < 0.01)},
            )
            for k in range(args.keys)
        ]
        loader.put("account", accounts)
        with_redis = entity_lookup(redis_settings, catalog)
        configs = [
            ("fraud (GBDT alone: always heavy)", "fraud", None),
            ("fraud-online (cheap alone)", "fraud-online", None),
            ("cascade only (logistic, then GBDT)", "cascade-only", None),
            ("fraud-graph, no feature store", "fraud-graph", None),
            ("fraud-graph + Redis enrichment", "fraud-graph", with_redis),
            ("fraud-ensemble (mean of 3)", "fraud-ensemble", None),
            ("one-stage graph (GBDT)", "one-stage", None),
        ]
        prepared = {label: batches(x, model, args.batch, args.keys) for label, model, _ in configs}
        timings: dict[str, list[float]] = {label: [] for label, _, _ in configs}
        quality: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for label, _, lookup in configs:
                kwargs = {"lookup": lookup} if lookup is not None else {}
                scores, first, then, decisions = [], 0, 0, {}
                started = time.perf_counter()
                for records in prepared[label]:
                    scored = score_records(records, catalog, scorer.infer, clock=time.perf_counter, **kwargs)
                    scores.append(scored.bodies)
                    for stats in scored.stages:
                        if stats.stage.endswith("/first"):
                            first += stats.rows
                        elif stats.stage.endswith("/then"):
                            then += stats.rows
                elapsed = time.perf_counter() - started
                timings[label].append(args.rows / elapsed)
                bodies = [json.loads(b + b"}") for chunk in scores for b in chunk]  # type: ignore[operator]
                labels = np.array([b["label"] for b in bodies])
                for b in bodies:
                    if "decision" in b:
                        decisions[b["decision"]] = decisions.get(b["decision"], 0) + 1
                quality[label] = {"accuracy": float((labels == truth).mean())}
                if first:
                    quality[label]["second_phase_share"] = then / first
                if decisions:
                    quality[label]["decisions"] = decisions  # type: ignore[assignment]
        base = statistics.median(timings[configs[0][0]])
        print(
            f"\n{args.rows} rows, batches of {args.batch}, {args.repeat} run(s) each, medians; x = vs the GBDT alone\n"
        )
        print(f"{'':38} {'rows/s':>10} {'x':>6} {'accuracy':>9} {'phase 2':>8}")
        results = {}
        for label, _, _ in configs:
            rate = statistics.median(timings[label])
            q = quality[label]
            share = f"{q['second_phase_share']:.1%}" if "second_phase_share" in q else ""
            print(f"{label:38} {rate:>10,.0f} {rate / base:>6.2f} {q['accuracy']:>9.4f} {share:>8}")
            results[label] = {"rows_per_s": rate, "ratio": rate / base, **q}
        for label, q in quality.items():
            if "decisions" in q:
                print(f"  {label}: decisions {q['decisions']}")
        record("graphs", {"rows": args.rows, "batch": args.batch, "repeat": args.repeat, "results": results})


if __name__ == "__main__":
    main()
