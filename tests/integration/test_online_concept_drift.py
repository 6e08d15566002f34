"""Concept drift on a real redis-server, two workers: the label stream written by both label consumers, one
decider per look, the adaptation of the shared learner, and both workers serving the same adapted weights."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer import synthetic
from streamer.adapters import devstack, model_repository, online, onnx_models
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.prometheus_drift import ConceptDriftMetrics
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.adapters.redis_drift import RedisDriftStore
from streamer.adapters.redis_state import LoggedPrediction, RedisStateStore
from streamer.core import learner
from streamer.core.concept_drift import DetectorSpec
from streamer.core.label_monitor import LabelMonitor
from streamer.core.routing import Catalog
from streamer.services.concept_drift import ConceptDriftWatch
from streamer.services.online_refresh import OnlineRefresher
from streamer.serving import ModelSet, ServingModels, cards_of
from tests.conftest import REPO

ONLINE_DIR = REPO / "examples" / "models" / "fraud-online" / "1"
CHUNK = 300


class Worker:
    """What one worker runs of this: its own connections, state store, refresher, watch and metrics."""

    def __init__(self, address: str, prefix: str, model: onnx_models.LoadedModel, events: list[Any]) -> None:
        self.store = RedisStateStore.from_url(address, prefix=prefix)
        self.serving = ServingModels(ModelSet(Catalog(cards_of([model])), OnnxScorer({model.card.name: {1: model}})))
        self.metrics = WorkerMetrics()
        self.refresher = OnlineRefresher(self.store, self.serving, self.metrics, refresh_s=60)
        self.refresher.add(model)
        self.watch = ConceptDriftWatch(
            RedisDriftStore(self.store.client, prefix),
            lambda: self.serving.current.catalog,
            lambda: dict(self.store.online),
            lambda kind, name, version, **fields: events.append((kind, name, version, fields)),
            ConceptDriftMetrics(self.metrics),
        )

    def scores(self, x: np.ndarray) -> np.ndarray:
        """What this worker serves for ``x`` (its ONNX session of the shared weights)."""
        self.refresher.refresh_once()
        model = self.serving.current.scorer.model("fraud-online@1")
        assert model is not None
        return model.session.run(None, {"float_input": x.astype(np.float32)})[1][:, 1]

    def gauge(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.metrics.exposition().decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == {"model": "fraud-online", "version": "1", **labels}:
                    return sample.value
        raise AssertionError(f"{name} not exported")


@pytest.fixture
def model(tmp_path: Path) -> onnx_models.LoadedModel:
    shutil.copytree(ONLINE_DIR, tmp_path / "fraud-online" / "1")
    return model_repository.load_version(tmp_path / "fraud-online" / "1")


def test_two_workers_detect_once_adapt_once_and_serve_identical_weights(
    redis_server: devstack.ServerInfo, model: onnx_models.LoadedModel
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    events: list[Any] = []
    one, two = Worker(redis_server.address, prefix, model, events), Worker(redis_server.address, prefix, model, events)
    x = synthetic.transactions(6 * CHUNK, seed=31)
    logit = np.where(np.arange(len(x)) < 3 * CHUNK, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    y = synthetic.labels_of(logit, seed=31)
    spec, start = online.spec_of(model)
    reference = start  # the offline replay of what the shared learner must become
    stream_scores: list[float] = []
    for c in range(6):
        rows = slice(c * CHUNK, (c + 1) * CHUNK)
        served = (one if c % 2 else two).scores(x[rows])
        stream_scores += served.tolist()
        one.store.log_predictions(
            LoggedPrediction(f"r{i}", "fraud-online", "1", float(s), 0.5, 10.0, x[i].astype(np.float32).tolist())
            for i, s in zip(range(rows.start, rows.stop), served, strict=True)
        )
        ids = [(f"r{i}", int(y[i])) for i in range(rows.start, rows.stop)]
        one.store.apply_labels(ids[: CHUNK // 2], 11.0)  # two label consumers, each with part of the labels
        two.store.apply_labels(ids[CHUNK // 2 :], 11.0)
        reference = learner.learn_many(reference, x[rows].astype(np.float32), y[rows])
        found = one.watch.check_once() + two.watch.check_once()  # both look: one decides, the other follows
        for detection in (d for d in found if d.rising):
            since = detection.position + 1
            stream_x = x[since : rows.stop].astype(np.float32)
            reference = learner.adapted(reference, "restart", stream_x, y[since : rows.stop].astype(float))

    drift_events = [e for e in events if e[0] == "concept-drift" and e[3]["direction"] == "rise"]
    assert len(drift_events) == 1, events
    fields = drift_events[0][3]
    assert 3 * CHUNK <= fields["label"] < 4 * CHUNK and fields["action"] == "restart"
    assert fields["error_rate_after"] > fields["error_rate_before"]
    shared = one.store.online_weights("fraud-online", "1")
    assert shared is not None and shared.adaptations == 1
    np.testing.assert_allclose(shared.z, reference.z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shared.n, reference.n, rtol=1e-9, atol=1e-9)
    probe = synthetic.transactions(2000, seed=32)
    assert np.max(np.abs(one.scores(probe) - two.scores(probe))) <= 1e-6
    after = learner.predict_proba_many(learner.FtrlState(shared.z, shared.n, spec.mean, spec.scale, spec.params), probe)
    assert np.max(np.abs(one.scores(probe) - after)) <= 1e-5  # float32 ONNX against the float64 learner
    # the shared figures, exported alike by both workers, are the prequential ones of the served stream
    monitor = LabelMonitor(DetectorSpec())
    monitor.learn_many(np.array(stream_scores), y, 0.5)
    for worker in (one, two):
        worker.watch.check_once()
        assert worker.gauge("streamer_prequential_labels") == len(y)
        assert worker.gauge("streamer_prequential_accuracy") == pytest.approx(monitor.accuracy, abs=1e-12)
        assert worker.gauge("streamer_concept_drift_detections", direction="rise") == 1
        assert worker.gauge("streamer_concept_drift_adaptations") == 1
