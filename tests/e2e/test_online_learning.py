"""Concept drift end to end: the synthetic rule changes halfway, labels flow back through the feedback topic,
the online model (weights in Redis) recovers while the frozen one does not; model events report the drop."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamer import synthetic
from streamer.adapters import devstack, model_repository
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.conftest import REPO
from tests.e2e.conftest import LEARNING_CONFIG, Topics, WorkerProcess, models_with_online, produce, read_all

CHUNK = 400
BEFORE, AFTER = 3, 5  # chunks under the original rule, then under the drifted one


class Reader:
    """Reads a topic from the beginning, keeping its position between calls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e", "fetch.wait.max.ms": 5})
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def take(self, count: int, timeout_s: float = 60.0) -> list[dict]:
        got: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            got += [json.loads(m.value()) for m in self.consumer.consume(1000, 0.1) if m.error() is None]
        assert len(got) == count, f"{len(got)} of {count} predictions"
        return got


def wait_joined(worker: WorkerProcess, expected: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    joined = 0.0
    while time.monotonic() < deadline:
        joined = worker.metrics().get('streamer_labels_total{outcome="joined"}', 0.0)
        if joined >= expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{joined} of {expected} labels joined")


def test_the_online_model_recovers_from_concept_drift_and_the_frozen_one_does_not(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    t = topics(4)
    events_topic = unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([events_topic], 1)
    worker = worker_factory(
        t,
        LEARNING_CONFIG.format(prefix=prefix),
        STREAMER_REDIS_URL=redis_server.address,
        STREAMER_MODELS_DIR=str(models_with_online(tmp_path)),
        STREAMER_DEFAULT_MODEL="fraud",
        STREAMER_MODEL_EVENTS_TOPIC=events_topic,
    )
    worker.wait_assigned()
    reader = Reader(kafka_broker.address, t.predictions)
    x = synthetic.transactions(CHUNK * (BEFORE + AFTER), seed=41)
    logit = np.where(np.arange(len(x)) < CHUNK * BEFORE, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    truth = synthetic.labels_of(logit, seed=41)
    accuracy: dict[str, list[float]] = {"fraud": [], "fraud-online": []}
    joined = 0
    for chunk in range(BEFORE + AFTER):
        rows = range(chunk * CHUNK, (chunk + 1) * CHUNK)
        requests = [
            (
                f"card-{i % 37}".encode(),
                json.dumps(
                    {
                        "id": f"{model}-{i}",
                        "model": model,
                        "features": synthetic.features_of(x[i]),
                    }
                ).encode(),
                None,
            )
            for i in rows
            for model in accuracy
        ]
        produce(kafka_broker.address, t.requests, requests)
        predictions = reader.take(len(requests))
        for model in accuracy:
            correct = [p["label"] == truth[int(p["id"].rsplit("-", 1)[1])] for p in predictions if p["model"] == model]
            accuracy[model].append(float(np.mean(correct)))
        time.sleep(0.3)  # the prediction log is written off the hot path (flushed every 0.1 s)
        labels = [
            (
                p["id"].encode(),
                json.dumps({"id": p["id"], "label": int(truth[int(p["id"].rsplit("-", 1)[1])])}).encode(),
                None,
            )
            for p in predictions
        ]
        produce(kafka_broker.address, t.feedback, labels)
        joined += len(labels)
        wait_joined(worker, joined)
        time.sleep(0.4)  # > online.refresh_ms: the next chunk is scored by the weights these labels made
    frozen, online = accuracy["fraud"], accuracy["fraud-online"]
    print("frozen", np.round(frozen, 3), "online", np.round(online, 3))
    assert min(frozen[:BEFORE]) > 0.85 and min(online[:BEFORE]) > 0.85  # both good under the training rule
    assert max(frozen[BEFORE:]) < 0.55  # the frozen model stays wrong after the drift
    # after at most 2 * CHUNK = 800 labels of the new rule, the online model is back above 0.7 on average and
    # no chunk of 400 falls under 0.65 (measured: 0.75-0.81 per chunk; one chunk's standard error is ~0.02)
    assert np.mean(online[BEFORE + 2 :]) > 0.7 and min(online[BEFORE + 2 :]) > 0.65

    reader.consumer.close()
    samples = worker.metrics()
    assert samples['streamer_online_updates_total{model="fraud-online",version="1"}'] == CHUNK * (BEFORE + AFTER)
    assert samples['streamer_online_model_updates{model="fraud-online",version="1"}'] >= CHUNK * (BEFORE + AFTER - 1)
    assert samples['streamer_online_weights_age_seconds{model="fraud-online",version="1"}'] < 2.0
    events = [json.loads(m.value()) for m in read_all(kafka_broker.address, [events_topic], 1, timeout_s=20)]
    below = [e for e in events if e["type"] == "accuracy-below-floor" and e["model"] == "fraud"]
    assert below and below[0]["accuracy"] < 0.7 and below[0]["floor"] == 0.7 and below[0]["window"] == "5m"
    assert samples['streamer_accuracy_below_floor{model="fraud",version="1"}'] == 1.0
    shared = redis.Redis.from_url(redis_server.address).hget(f"{prefix}:online:fraud-online:1", "updates")
    assert int(shared) == CHUNK * (BEFORE + AFTER)


def test_an_online_card_with_l1_serves_its_shipped_weights_and_learns(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """An [online] card with l1 > 0 (the worker used to die at start): the shipped weights are the starting
    state, so the first predictions are the shipped graph's, and labels learn through the shared state."""
    models = models_with_online(tmp_path)
    card = models / "fraud-online" / "1" / "card.toml"
    card.write_text(card.read_text().replace("l1 = 0.0", "l1 = 0.5", 1))
    prefix = f"l1{uuid.uuid4().hex[:6]}"
    t = topics(2)
    worker = worker_factory(
        t,
        LEARNING_CONFIG.format(prefix=prefix),
        STREAMER_REDIS_URL=redis_server.address,
        STREAMER_MODELS_DIR=str(models),
        STREAMER_DEFAULT_MODEL="fraud-online",
    )
    worker.wait_assigned()
    reader = Reader(kafka_broker.address, t.predictions)
    x = synthetic.transactions(300, seed=71)
    truth = synthetic.labels(x, seed=71)
    produce(
        kafka_broker.address,
        t.requests,
        [
            (b"k", json.dumps({"id": f"l1-{i}", "features": synthetic.features_of(x[i])}).encode(), None)
            for i in range(300)
        ],
    )
    predictions = {p["id"]: p for p in reader.take(300)}
    reader.consumer.close()
    shipped = model_repository.load_version(models / "fraud-online" / "1")
    expected = shipped.session.run(None, {"float_input": x.astype(np.float32)})[1][:, 1]
    served = np.array([predictions[f"l1-{i}"]["score"] for i in range(300)])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    time.sleep(0.5)  # logged
    produce(
        kafka_broker.address,
        t.feedback,
        [(b"k", json.dumps({"id": f"l1-{i}", "label": int(truth[i])}).encode(), None) for i in range(300)],
    )
    wait_joined(worker, 300)
    samples = worker.metrics()
    assert samples['streamer_online_updates_total{model="fraud-online",version="1"}'] == 300
    assert "cannot register" not in worker.log() and "Traceback" not in worker.log()
    shared = redis.Redis.from_url(redis_server.address).hget(f"{prefix}:online:fraud-online:1", "updates")
    assert int(shared) == 300


def test_a_shifted_feature_distribution_raises_a_drift_event(
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
) -> None:
    t = topics(4)
    events_topic = unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([events_topic], 1)
    worker = worker_factory(t, LEARNING_CONFIG.format(prefix="drift"), STREAMER_MODEL_EVENTS_TOPIC=events_topic)
    worker.wait_assigned()
    x = synthetic.transactions(600, seed=61)
    x[:, 0] *= 20  # amounts twenty times larger than in training; the other features unchanged
    produce(
        kafka_broker.address,
        t.requests,
        [(b"k", json.dumps({"features": synthetic.features_of(r)}).encode(), None) for r in x],
    )
    read_all(kafka_broker.address, [t.predictions], 600, settle_s=0)
    [event] = [json.loads(m.value()) for m in read_all(kafka_broker.address, [events_topic], 1, timeout_s=30)]
    assert (event["type"], event["model"], event["version"]) == ("feature-drift", "fraud", "1")
    assert set(event["psi"]) == {"amount"} and event["psi"]["amount"] > 1.0 and event["rows"] >= 300
    samples = worker.metrics()
    assert samples['streamer_feature_psi{feature="amount",model="fraud",version="1"}'] > 1.0
    assert samples['streamer_feature_psi{feature="hour",model="fraud",version="1"}'] < 0.25
    assert samples['streamer_model_events_total{type="feature-drift"}'] == 1.0


def test_two_workers_adapt_to_a_concept_drift_once_and_serve_identical_weights(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Two workers share the partitions and the labels: the drift is detected on the label stream of both, one
    of them adapts the shared learner (restart, the card's default), one concept-drift event is written, and the
    same rows score the same on every partition afterwards (difference <= 1e-6)."""
    prefix = f"cd{uuid.uuid4().hex[:6]}"
    t = topics(4)
    events_topic = unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([events_topic], 1)
    env = {
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODELS_DIR": str(models_with_online(tmp_path)),
        "STREAMER_DEFAULT_MODEL": "fraud-online",
        "STREAMER_MODEL_EVENTS_TOPIC": events_topic,
    }
    workers = [worker_factory(t, LEARNING_CONFIG.format(prefix=prefix), **env) for _ in range(2)]
    for worker in workers:
        worker.wait_assigned()
    reader = Reader(kafka_broker.address, t.predictions)
    chunk, chunks = 300, 6
    x = synthetic.transactions(chunk * chunks, seed=43)
    logit = np.where(np.arange(len(x)) < chunk * 3, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    truth = synthetic.labels_of(logit, seed=43)
    for c in range(chunks):
        rows = range(c * chunk, (c + 1) * chunk)
        body = [
            (f"k{i}".encode(), json.dumps({"id": f"d-{i}", "features": synthetic.features_of(x[i])}).encode())
            for i in rows
        ]
        produce(kafka_broker.address, t.requests, [(k, v, None) for k, v in body])
        predictions = reader.take(chunk)
        time.sleep(0.3)  # the prediction log is written off the hot path (flushed every 0.1 s)
        produce(
            kafka_broker.address,
            t.feedback,
            [
                (b"k", json.dumps({"id": p["id"], "label": int(truth[int(p["id"][2:])])}).encode(), None)
                for p in predictions
            ],
        )
        deadline = time.monotonic() + 30
        while sum(w.metrics().get('streamer_labels_total{outcome="joined"}', 0.0) for w in workers) < (c + 1) * chunk:
            assert time.monotonic() < deadline, "labels not joined"
            time.sleep(0.1)
    store = redis.Redis.from_url(redis_server.address)
    deadline = time.monotonic() + 30  # the decider looks every evaluation.check_interval_s (1 s here)
    while int(store.hget(f"{prefix}:online:fraud-online:1", "adaptations") or 0) < 1:
        assert time.monotonic() < deadline, "no adaptation"
        time.sleep(0.2)
    assert int(store.hget(f"{prefix}:online:fraud-online:1", "adaptations")) == 1
    probe = synthetic.transactions(25, seed=44)
    for attempt in range(50):  # until both workers serve the adapted weights (online.refresh_ms = 200)
        requests = [
            (
                f"p{attempt}-{k}".encode(),
                json.dumps({"id": f"p{attempt}-{i}-{k}", "features": synthetic.features_of(row)}).encode(),
                None,
            )
            for i, row in enumerate(probe)
            for k in range(8)
        ]
        produce(kafka_broker.address, t.requests, requests)
        answered = reader.take(len(requests))
        by_row: dict[str, list[float]] = {}
        for p in answered:
            by_row.setdefault(p["id"].split("-")[1], []).append(p["score"])
        spread = max(max(s) - min(s) for s in by_row.values())
        partitions = {p["source"]["partition"] for p in answered}
        if spread <= 1e-6 and len(partitions) == 4:
            break
        time.sleep(0.2)
    assert len(partitions) == 4 and spread <= 1e-6, (spread, partitions)
    reader.consumer.close()
    events = [json.loads(m.value()) for m in read_all(kafka_broker.address, [events_topic], 1, timeout_s=20)]
    drifts = [e for e in events if e["type"] == "concept-drift" and e["model"] == "fraud-online"]
    rises = [e for e in drifts if e["direction"] == "rise"]
    assert len(rises) == 1 and rises[0]["action"] == "restart", drifts
    assert 3 * chunk <= rises[0]["label"] < 4 * chunk
    labelled = 'streamer_prequential_labels{model="fraud-online",version="1"}'
    for worker in workers:  # every worker follows the shared monitor (the last labels within a look or two)
        deadline = time.monotonic() + 30
        while worker.metrics().get(labelled, 0.0) < chunk * chunks:
            assert time.monotonic() < deadline, worker.metrics().get(labelled)
            time.sleep(0.2)
        samples = worker.metrics()
        assert samples[labelled] == chunk * chunks
        key = '{direction="rise",model="fraud-online",version="1"}'
        assert samples[f"streamer_concept_drift_detections{key}"] == 1.0
        assert samples['streamer_concept_drift_adaptations{model="fraud-online",version="1"}'] == 1.0
        assert "Traceback" not in worker.log()


def test_a_frozen_model_with_a_calibration_stage_follows_the_drift(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """The shipped trees with a [calibration] card: the worker logs the features of their predictions, learns the
    stage from the labels (all of them, in Redis), and serves the calibrated graph -- which, after the drift of
    make demo's act 2, is right much more often than the trees alone."""
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud", models / "fraud")
    card = models / "fraud" / "1" / "card.toml"
    features = '["amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days"]'
    card.write_text(card.read_text() + f"\n[calibration]\nfeatures = {features}\n")
    prefix = f"cal{uuid.uuid4().hex[:6]}"
    t = topics(2)
    worker = worker_factory(
        t,
        LEARNING_CONFIG.format(prefix=prefix),
        STREAMER_REDIS_URL=redis_server.address,
        STREAMER_MODELS_DIR=str(models),
    )
    worker.wait_assigned()
    reader = Reader(kafka_broker.address, t.predictions)
    chunk, chunks = 250, 8
    x = synthetic.transactions(chunk * chunks, seed=47)
    logit = np.where(np.arange(len(x)) < chunk * 2, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    truth = synthetic.labels_of(logit, seed=47)
    shipped = model_repository.load_version(REPO / "models" / "fraud" / "1")
    frozen = shipped.session.run(None, {"float_input": x.astype(np.float32)})[0]
    served_accuracy, frozen_accuracy = [], []
    store = redis.Redis.from_url(redis_server.address)
    for c in range(chunks):
        rows = range(c * chunk, (c + 1) * chunk)
        body = [
            (b"k", json.dumps({"id": f"c-{i}", "features": synthetic.features_of(x[i])}).encode(), None) for i in rows
        ]
        produce(kafka_broker.address, t.requests, body)
        predictions = reader.take(chunk)
        served_accuracy.append(float(np.mean([p["label"] == truth[int(p["id"][2:])] for p in predictions])))
        frozen_accuracy.append(float(np.mean(frozen[rows.start : rows.stop] == truth[rows.start : rows.stop])))
        time.sleep(0.3)  # the prediction log is written off the hot path (flushed every 0.1 s)
        labels = [
            (b"k", json.dumps({"id": p["id"], "label": int(truth[int(p["id"][2:])])}).encode(), None)
            for p in predictions
        ]
        produce(kafka_broker.address, t.feedback, labels)
        wait_joined(worker, (c + 1) * chunk)
        deadline = time.monotonic() + 30  # the decider learns the stage at its next look (check_interval_s 1 s)
        while int(store.hget(f"{prefix}:calibration:fraud:1", "updates") or 0) < (c + 1) * chunk:
            assert time.monotonic() < deadline, "the calibration stage did not learn the labels"
            time.sleep(0.1)
        time.sleep(1.2)  # > evaluation.check_interval_s: every worker serves the stage learnt from these labels
    reader.consumer.close()
    print("frozen", np.round(frozen_accuracy, 3), "calibrated", np.round(served_accuracy, 3))
    assert min(served_accuracy[:2]) > 0.85  # the identity stage: the trees' own accuracy before the drift
    assert np.mean(served_accuracy[4:]) > np.mean(frozen_accuracy[4:]) + 0.15
    assert "Traceback" not in worker.log()
