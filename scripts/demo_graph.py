"""The demo's third act: the fraud graph (``examples/graphs/fraud-graph.toml``) at work.

Account features go to Redis (``streamer features load`` does the same from a file): a few accounts flagged,
some with chargebacks, the rest unknown. Transactions naming ``"model": "fraud-graph"`` then flow through the
worker already running: enrichment from Redis, the cheap logistic model, the GBDT for the rows it is unsure of,
and the business rules. The act prints what each stage made of a few requests and the share of rows that
reached the second phase.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from streamer import synthetic
from streamer.adapters.redis_entities import EntityFeatureStore


def run(
    console: Console,
    bootstrap: str,
    redis_url: str,
    *,
    count: int = 2000,
    accounts: int = 400,
    requests_topic: str = "requests",
    predictions_topic: str = "predictions",
) -> dict[str, float]:
    rng = np.random.default_rng(11)
    known = [
        (
            f"acct-{k:06d}".encode(),
            {"chargebacks_90d": float(rng.poisson(0.4)), "flagged": float(rng.random() < 0.02)},
        )
        for k in range(accounts // 2)  # half the accounts are known to the feature store
    ]
    EntityFeatureStore(redis.Redis.from_url(redis_url)).put("account", known)
    console.print(f"{len(known)} accounts in Redis ({sum(int(f['flagged']) for _, f in known)} flagged)")
    x = synthetic.transactions(count, seed=int(time.time()) % 10_000)
    x[::97, 0] = 2500.0  # a few amounts over the limit
    token = f"graph-{int(time.time())}"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        body = {"id": f"{token}-{i}", "model": "fraud-graph", "features": synthetic.features_of(x[i])}
        producer.produce(requests_topic, json.dumps(body).encode(), f"acct-{i % accounts:06d}".encode())
        producer.poll(0)
    producer.flush(30)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": token, "enable.auto.commit": False, "fetch.wait.max.ms": 5}
    )
    partitions = consumer.list_topics(predictions_topic, timeout=10).topics[predictions_topic].partitions
    consumer.assign([TopicPartition(predictions_topic, p, OFFSET_BEGINNING) for p in partitions])
    predictions: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(predictions) < count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=5000, timeout=0.2):
            if message.error() is None and message.value().startswith(b'{"id":"' + token.encode()):
                body = json.loads(message.value())
                body["key"] = message.key().decode()
                predictions[body["id"]] = body
    consumer.close()
    shown = Table(title="what the graph made of a few requests")
    for column in ("key", "amount", "phase", "scored by", "score", "decision", "reasons"):
        shown.add_column(column, no_wrap=column != "reasons")
    picks: list[dict] = []
    for wanted in ("deny", "review", "allow"):
        picks += [p for p in predictions.values() if p["decision"] == wanted][:3]
    for p in picks:
        i = int(p["id"].rsplit("-", 1)[1])
        shown.add_row(
            p["key"],
            f"{x[i, 0]:.0f}",
            p["outputs"]["phases.path"],
            p["outputs"]["phases.model"],
            f"{p['score']:.3f}",
            p["decision"],
            "; ".join(p["reasons"]),
        )
    console.print(shown)
    paths = Counter(p["outputs"]["phases.path"] for p in predictions.values())
    decisions = Counter(p["decision"] for p in predictions.values())
    second = paths["then"] / max(len(predictions), 1)
    console.print(
        f"{len(predictions)} of {count} answered; the GBDT (second phase) scored {second:.1%} of them; "
        f"decisions {dict(decisions)}"
    )
    return {"answered": len(predictions), "second_phase_share": second}
