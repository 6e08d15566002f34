"""Redis stopped mid-learning and brought back, under load, on both engines: scoring never stops, labels and
prediction-log writes wait (bounded) and then all join exactly once; the online model learns again after."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import redis

from streamer import synthetic
from streamer.adapters import devstack
from tests.chaos.test_faults import LONG
from tests.e2e.conftest import LEARNING_CONFIG, Topics, WorkerProcess, models_with_online, produce
from tests.e2e.test_online_learning import Reader, wait_joined

OUTAGE_S = 60.0 if LONG else 12.0


def test_redis_stopped_and_restarted_scoring_goes_on_and_nothing_is_lost(
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """A password-protected redis-server (AUTH from STREAMER_REDIS_PASSWORD) with an append-only file is stopped
    mid-run and started again on the same port: predictions never stop, labels and prediction-log writes wait
    (bounded) and then all join; the online model keeps its last weights meanwhile and learns again after.

    The outage (12 s; 60 s in the long form, ``make chaos``) outlasts the label consumer's max.poll.interval.ms
    (10 s): the group takes back the
    partitions of the batch it holds, the commit after the outage is refused, and the batch is read again. Those
    labels were sent once: they count as ``reread``, never as ``duplicate``, and learn once."""
    data = tmp_path / "redis"
    server = devstack.start_redis(data, die_with_parent=True, password="s3cret", persistent=True)
    t = topics(4)
    worker = worker_factory(
        t,
        LEARNING_CONFIG.format(prefix="outage"),
        STREAMER_REDIS_URL=server.address,
        STREAMER_REDIS_PASSWORD="s3cret",
        STREAMER_MODELS_DIR=str(models_with_online(tmp_path)),
        STREAMER_DEFAULT_MODEL="fraud-online",
    )
    worker.wait_assigned()
    reader = Reader(kafka_broker.address, t.predictions)
    x = synthetic.transactions(600, seed=51)
    truth = synthetic.labels(x, seed=51)

    def requests(rows: range) -> list[tuple[bytes, bytes, None]]:
        return [
            (
                b"k",
                json.dumps({"id": f"o-{i}", "features": synthetic.features_of(x[i])}).encode(),
                None,
            )
            for i in rows
        ]

    def labels(rows: range) -> list[tuple[bytes, bytes, None]]:
        return [(b"k", json.dumps({"id": f"o-{i}", "label": int(truth[i])}).encode(), None) for i in rows]

    produce(kafka_broker.address, t.requests, requests(range(300)))
    reader.take(300)
    time.sleep(0.5)  # logged
    devstack.stop_server(server)

    produce(kafka_broker.address, t.requests, requests(range(300, 600)))
    assert len(reader.take(300)) == 300  # scoring goes on without Redis
    produce(kafka_broker.address, t.feedback, labels(range(600)))
    time.sleep(3)
    down = worker.metrics()
    assert down.get('streamer_labels_total{outcome="joined"}', 0.0) == 0  # held, not applied, not committed
    # the prediction log fails and retries; the labels wait for it (bounded), then fail and retry too
    assert down['streamer_redis_errors_total{operation="log_predictions"}'] >= 1
    assert down['streamer_online_weights_age_seconds{model="fraud-online",version="1"}'] >= 1.0
    time.sleep(OUTAGE_S - 3)  # the held label batch outlives max.poll.interval.ms

    server = devstack.start_redis(data, die_with_parent=True, port=server.port, password="s3cret", persistent=True)
    try:
        wait_joined(worker, 600, timeout_s=60)
        deadline = time.monotonic() + 30
        while worker.metrics().get('streamer_labels_total{outcome="reread"}', 0.0) == 0:
            assert time.monotonic() < deadline, "the held batch was not read again after the outage"
            time.sleep(0.5)
        time.sleep(2)  # the rest of the re-read, if any
        up = worker.metrics()
        print({k: v for k, v in up.items() if k.startswith("streamer_labels_total")})
        assert up.get('streamer_labels_total{outcome="duplicate"}', 0.0) == 0  # nothing was sent twice
        assert up['streamer_labels_total{outcome="joined"}'] == 600
        assert "service labels failed" not in worker.log()  # the refused commit is a warning, not a traceback
        assert up.get('streamer_labels_total{outcome="unknown"}', 0.0) == 0
        assert up.get("streamer_prediction_log_dropped_total", 0.0) == 0
        assert up['streamer_online_updates_total{model="fraud-online",version="1"}'] == 600
        client = redis.Redis.from_url(server.address, password="s3cret")
        assert int(client.hget("outage:online:fraud-online:1", "updates")) == 600
    finally:
        reader.consumer.close()
        devstack.stop_server(server)
