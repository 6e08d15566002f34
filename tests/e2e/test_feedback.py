"""Labels flow back: joined once each to their predictions, evaluated in Redis, shown by `streamer eval show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import numpy as np
import redis

from streamer import synthetic
from streamer.adapters import devstack
from streamer.core.evaluation import metrics_of, stats_of
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all


def test_labels_join_once_and_the_rolling_evaluation_matches_a_recomputation(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    redis.Redis.from_url(redis_server.address).flushdb()  # this test owns the shared evaluation keys
    t = topics(4)
    worker = worker_factory(t, STREAMER_REDIS_URL=redis_server.address)
    worker.wait_assigned()
    token = uuid.uuid4().hex[:6]
    rows = synthetic.transactions(600, seed=31)
    truth = synthetic.labels(rows, seed=31)
    requests = [
        (
            f"c{i % 50}".encode(),
            json.dumps({"id": f"{token}-{i}", "features": synthetic.features_of(r)}).encode(),
            None,
        )
        for i, r in enumerate(rows)
    ]
    produce(kafka_broker.address, t.requests, requests)
    predictions = {
        json.loads(m.value())["id"]: json.loads(m.value()) for m in read_all(kafka_broker.address, [t.predictions], 600)
    }
    assert len(predictions) == 600
    time.sleep(0.5)  # the prediction log is written off the hot path
    labelled = [f"{token}-{i}" for i in range(500)]
    feedback = [
        (b"k", json.dumps({"id": i, "label": int(truth[int(i.split("-")[1])])}).encode(), None) for i in labelled
    ]
    feedback += [(b"k", json.dumps({"id": f"{token}-never-{i}", "label": 1}).encode(), None) for i in range(20)]
    feedback += [(b"k", b"not a label", None)] * 10
    feedback += feedback[:100]  # a replay: must not count twice
    produce(kafka_broker.address, t.feedback, feedback)

    deadline = time.monotonic() + 60
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        samples = worker.metrics()
        counts = {
            o: samples.get(f'streamer_labels_total{{outcome="{o}"}}', 0)
            for o in ("joined", "unknown", "duplicate", "dead_letter")
        }
        if sum(counts.values()) >= len(feedback):
            break
        time.sleep(0.5)
    assert counts == {"joined": 500, "unknown": 20, "duplicate": 100, "dead_letter": 10}

    dead = [
        m
        for m in read_all(kafka_broker.address, [t.dlq], 10)
        if headers_of(m)["streamer-source-topic"] == t.feedback.encode()
    ]
    assert len(dead) == 10 and {m.value() for m in dead} == {b"not a label"}

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env |= {"STREAMER_REDIS_URL": redis_server.address, "STREAMER_MODELS_DIR": str(REPO / "models")}
    shown = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "eval", "show", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    rows_shown = {r["window"]: r for r in json.loads(shown.stdout) if (r["model"], r["version"]) == ("fraud", "1")}
    scores = np.array([predictions[i]["score"] for i in labelled])
    labels = np.array([truth[int(i.split("-")[1])] for i in labelled])
    expected = metrics_of(stats_of(scores, labels, 0.5))
    for window in ("5m", "1h", "24h"):
        row = rows_shown[window]
        assert row["count"] == 500
        for name in ("accuracy", "log_loss", "auc", "precision", "recall"):
            assert abs(row[name] - getattr(expected, name)) < 1e-9, (window, name)


def test_scoring_goes_on_while_redis_is_unreachable(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(2)
    nobody = f"redis://127.0.0.1:{devstack.free_port()}/0"  # nothing listens there
    worker = worker_factory(t, STREAMER_REDIS_URL=nobody)
    worker.wait_assigned()
    rows = synthetic.transactions(300, seed=41)
    requests = [(b"k", json.dumps({"features": synthetic.features_of(r)}).encode(), None) for r in rows]
    produce(kafka_broker.address, t.requests, requests)
    assert len(read_all(kafka_broker.address, [t.predictions], 300)) == 300
    assert worker.process.poll() is None
    assert "cannot log" in worker.log()  # the prediction log retries (bounded) instead of blocking scoring
