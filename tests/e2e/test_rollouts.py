"""Rollouts decided by delayed labels across two workers (both engines).

The labels are the GBDT's own decisions at threshold 0.2, so on them version 3 (the GBDT, its card's threshold
0.2) is right every time, the shipped logistic model 88 % of the time, and the logistic model with negated
weights mostly wrong. Version 1 (logistic) is the champion; version 2
(negated) is dropped in, tried as a shadow, and rolled back on labels; version 3 (the GBDT) is dropped in, tried,
and promoted. Each decision is made once (one event) although both workers look, and both workers then serve the
result; requests are answered by the champion throughout, exactly once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.e2e.test_model_lifecycle import scores_of, serving_version, wait_for
from tests.model_versions import GBDT, LOGISTIC, inverted_logistic, write_version

CONFIG = """
[redis]
key_prefix = "{prefix}"

[evaluation]
windows = "10m"
floor_window = "10m"
check_interval_s = 0.5

[models]
control_interval_s = 0.5
settle_s = 0.3
watch_interval_s = 0.5

[rollout.fraud]
enabled = true
stage = "shadow"
window = "10m"
min_labels = 300
promote_margin = 0.05
rollback_margin = 0.05
"""


def test_a_worse_challenger_is_rolled_back_and_a_better_one_promoted_on_labels(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    t = topics(partitions=4)
    shadow_topic, events_topic = unique_name("shadow"), unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([shadow_topic, events_topic], 4)
    models = tmp_path / "models"
    models.mkdir()
    write_version(models, "fraud", 1, LOGISTIC)
    env = {
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_SHADOW_TOPIC": shadow_topic,
        "STREAMER_MODEL_EVENTS_TOPIC": events_topic,
    }
    config = CONFIG.format(prefix=unique_name("ro"))
    workers = [worker_factory(t, config, **env, STREAMER_WORKER_NAME="scorer-a"), worker_factory(t, config, **env)]
    for worker in workers:
        worker.wait_assigned()
    # one id per worker, on one host: the configured name, else host:pid; in the start line and /ready
    ids = ["scorer-a", f"{socket.gethostname()}:{workers[1].process.pid}"]
    for worker, worker_id in zip(workers, ids, strict=True):
        assert f"worker {worker_id} starting" in worker.log()
        wait_for(lambda w=worker: w.ready() is not None, 30, "the worker is ready")
        assert worker.ready()["worker"] == worker_id  # type: ignore[index]
    sent = 0

    def round_of_labelled_requests(seed: int, count: int = 500) -> None:
        nonlocal sent
        rows = synthetic.transactions(count, seed=seed)
        truth = (scores_of(GBDT / "model.onnx", rows) >= 0.2).astype(int)
        requests = [
            (
                f"c{i % 50}".encode(),
                json.dumps({"id": f"{seed}-{i}", "features": synthetic.features_of(rows[i])}).encode(),
                None,
            )
            for i in range(count)
        ]
        produce(kafka_broker.address, t.requests, requests)
        sent += count
        read_all(kafka_broker.address, [t.predictions], sent, settle_s=0.5)  # answered (and logged) first
        labels = [
            (b"k", json.dumps({"id": f"{seed}-{i}", "label": int(truth[i])}).encode(), None) for i in range(count)
        ]
        produce(kafka_broker.address, t.feedback, labels)

    def events() -> list[dict]:
        return [
            json.loads(m.value()) for m in read_all(kafka_broker.address, [events_topic], 1, timeout_s=3, settle_s=0.5)
        ]

    def decided(kind: str, version: str) -> bool:
        return any(e["type"] == kind and e["version"] == version for e in events())

    wait_for(lambda: decided("rollout-champion", "1"), 20, "version 1 pinned as the champion")
    write_version(models, "fraud", 2, LOGISTIC, model=inverted_logistic())
    wait_for(lambda: decided("rollout-started", "2"), 30, "version 2 on trial")
    round_of_labelled_requests(seed=1)
    wait_for(lambda: decided("model-rolled-back", "2"), 60, "version 2 rolled back on labels")
    write_version(models, "fraud", 3, GBDT, threshold=0.2)
    wait_for(lambda: decided("rollout-started", "3"), 30, "version 3 on trial")
    round_of_labelled_requests(seed=2)
    wait_for(lambda: decided("model-promoted", "3"), 60, "version 3 promoted on labels")
    for worker in workers:
        wait_for(lambda w=worker: serving_version(w) == 3, 15, "both workers serve version 3")

    log = events()
    kinds = [
        (e["type"], e["version"]) for e in log if e["type"].startswith(("model-promoted", "model-rolled", "rollout"))
    ]
    assert kinds == [
        ("rollout-champion", "1"),
        ("rollout-started", "2"),
        ("model-rolled-back", "2"),
        ("rollout-started", "3"),
        ("model-promoted", "3"),
    ]
    rolled_back = next(e for e in log if e["type"] == "model-rolled-back")
    assert rolled_back["candidate_accuracy"] < 0.5 < rolled_back["champion_accuracy"]
    assert rolled_back["candidate_labels"] >= 300
    promoted = next(e for e in log if e["type"] == "model-promoted")
    assert promoted["candidate_accuracy"] == 1.0 > promoted["champion_accuracy"] + 0.05
    assert (promoted["champion_before"], promoted["champion"]) == (1, 3), "champion: the one after the change"
    assert (rolled_back["champion_before"], rolled_back["champion"]) == (1, 1)
    assert {e["worker"] for e in log if e["type"] in dict(kinds)} <= set(ids)
    predictions = [json.loads(m.value()) for m in read_all(kafka_broker.address, [t.predictions], sent)]
    assert len(predictions) == sent and {p["version"] for p in predictions} == {"1"}, "the champion answered"
    shadow = [json.loads(m.value()) for m in read_all(kafka_broker.address, [shadow_topic], 1000)]
    assert {p["version"] for p in shadow} == {"2", "3"} and len(shadow) >= sent
    assert np.mean([p["version"] == "2" for p in shadow]) > 0.3
    for worker in workers:
        assert worker.terminate() == 0
