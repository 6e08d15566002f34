"""Hot reload under load, both engines: versions dropped in, refused and removed while requests flow.

Requests go in at a steady rate throughout. Meanwhile: version 2 (a different model) is renamed into place,
then a corrupt version 3 and a version 4 whose checksum is wrong, then version 2 is removed. Every request gets
exactly one output; each prediction's score is what ONNX Runtime gives for the version stamped on it; per
partition the versions follow the switches (1, then 2, then 1 again: a batch is never scored by a set being
swapped); the refusals are counted, logged once and reported as ``model-refused`` events; serving never stops.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import redis

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.conftest import REPO
from tests.e2e.conftest import LEARNING_CONFIG, Topics, WorkerProcess, produce, read_all
from tests.e2e.test_scoring_path import check_exactly_once_in_order
from tests.model_versions import GBDT, LOGISTIC, remove_version, write_version


def scores_of(model: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"float_input": rows.astype(np.float32)})[1][:, 1]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def serving_version(worker: WorkerProcess) -> int | None:
    for name, value in worker.metrics().items():
        if name.startswith("streamer_model_info{") and 'model="fraud"' in name and 'serving="1"' in name and value:
            return int(name.split('version="')[1].split('"')[0])
    return None


def test_versions_dropped_in_refused_and_removed_under_load(
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    t = topics(partitions=4)
    events_topic = unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([events_topic], 1)
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    worker = worker_factory(
        t,
        "[models]\nwatch_interval_s = 1.0\nsettle_s = 0.5\n",
        STREAMER_MODELS_DIR=str(models),
        STREAMER_MODEL_EVENTS_TOPIC=events_topic,
    )
    worker.wait_assigned()
    count, rate = 1800, 200.0
    rows = synthetic.transactions(count, seed=41)
    messages = [
        (f"k{i % 97}".encode(), json.dumps({"id": f"h{i}", "features": synthetic.features_of(rows[i])}).encode(), None)
        for i in range(count)
    ]
    producer = threading.Thread(target=produce, args=(kafka_broker.address, t.requests, messages, rate))
    producer.start()
    time.sleep(2.0)
    write_version(models, "fraud", 2, LOGISTIC)
    switched_in = wait_for(lambda: serving_version(worker) == 2, 30, "version 2 served")
    write_version(models, "fraud", 3, GBDT, model=b"not an onnx file at all")
    write_version(models, "fraud", 4, GBDT, sha_of=b"other bytes")
    wait_for(
        lambda: worker.metrics().get('streamer_model_changes_total{change="refused",model="fraud"}', 0) >= 2,
        30,
        "versions 3 and 4 refused",
    )
    remove_version(models, "fraud", 2)
    fell_back = wait_for(lambda: serving_version(worker) == 1, 30, "fallback to version 1")
    producer.join()
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], count)
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == count, "every request is a prediction: no dead letter across the switches"
    index = {f"h{i}": i for i in range(count)}
    expected = {1: scores_of(GBDT / "model.onnx", rows), 2: scores_of(LOGISTIC / "model.onnx", rows)}
    versions_by_partition: dict[int, list[int]] = defaultdict(list)
    for output in sorted(outputs, key=lambda m: (m.partition(), m.offset())):
        body = json.loads(output.value())
        version = int(body["version"])
        assert version in (1, 2), body
        assert abs(body["score"] - expected[version][index[body["id"]]]) < 1e-6, body
        if not versions_by_partition[output.partition()] or versions_by_partition[output.partition()][-1] != version:
            versions_by_partition[output.partition()].append(version)
    for partition, sequence in versions_by_partition.items():
        assert sequence in ([1], [1, 2], [1, 2, 1], [2, 1], [2]), (partition, sequence)
    assert any(len(s) >= 2 for s in versions_by_partition.values()), versions_by_partition
    events = [json.loads(m.value()) for m in read_all(kafka_broker.address, [events_topic], 5, timeout_s=15)]
    refused = {e["version"]: e["reason"] for e in events if e["type"] == "model-refused"}
    assert set(refused) == {"3", "4"}, events
    assert "sha256" in refused["4"] and "ONNX" in refused["3"], refused
    assert {"model-loaded", "model-removed"} <= {e["type"] for e in events}
    log = worker.log()
    assert log.count("refused model fraud@3") == 1 and log.count("refused model fraud@4") == 1
    print(f"version 2 served {switched_in:.1f} s after it was renamed into place; fallback in {fell_back:.1f} s")
    assert worker.terminate() == 0


@pytest.mark.parametrize("engine", ["batch"])  # registration is the watcher's and the engine's alike: one engine
def test_an_online_version_dropped_in_registers_and_learns_like_one_present_at_start(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    prefix = f"hr{uuid.uuid4().hex[:6]}"
    t = topics(2)
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    worker = worker_factory(
        t,
        LEARNING_CONFIG.format(prefix=prefix) + "\n[models]\nsettle_s = 0.3\nwatch_interval_s = 0.5\n",
        STREAMER_REDIS_URL=redis_server.address,
        STREAMER_MODELS_DIR=str(models),
        STREAMER_DEFAULT_MODEL="fraud",
    )
    worker.wait_assigned()
    staging = models / "fraud-online" / ".1"
    shutil.copytree(LOGISTIC, staging)
    os.rename(staging, models / "fraud-online" / "1")
    client = redis.Redis.from_url(redis_server.address)
    wait_for(lambda: client.exists(f"{prefix}:online:fraud-online:1") == 1, 30, "shared weights seeded")
    x = synthetic.transactions(300, seed=81)
    truth = synthetic.labels(x, seed=81)
    requests = [
        (
            b"k",
            json.dumps({"id": f"o-{i}", "model": "fraud-online", "features": synthetic.features_of(x[i])}).encode(),
            None,
        )
        for i in range(300)
    ]
    produce(kafka_broker.address, t.requests, requests)
    predictions = [json.loads(m.value()) for m in read_all(kafka_broker.address, [t.predictions], 300)]
    assert len(predictions) == 300 and {p["model"] for p in predictions} == {"fraud-online"}
    np.testing.assert_allclose(
        [p["score"] for p in sorted(predictions, key=lambda p: int(p["id"][2:]))],
        scores_of(LOGISTIC / "model.onnx", x),
        atol=1e-5,
    )
    time.sleep(0.5)  # logged
    produce(
        kafka_broker.address,
        t.feedback,
        [(b"k", json.dumps({"id": f"o-{i}", "label": int(truth[i])}).encode(), None) for i in range(300)],
    )
    wait_for(
        lambda: worker.metrics().get('streamer_online_updates_total{model="fraud-online",version="1"}', 0) == 300,
        30,
        "300 labels learnt by the dropped-in version",
    )
    assert int(client.hget(f"{prefix}:online:fraud-online:1", "updates")) == 300
    assert worker.terminate() == 0
