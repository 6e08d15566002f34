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
from streamer.core import calibration, learner
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


class Calibrating:
    """One worker serving a calibrated frozen version: its own connections, serving set and watch."""

    def __init__(self, address: str, prefix: str, model: onnx_models.LoadedModel, events: list[Any]) -> None:
        self.model = model
        self.store = RedisStateStore.from_url(address, prefix=prefix)
        self.serving = ServingModels(ModelSet(Catalog(cards_of([model])), OnnxScorer({model.card.name: {1: model}})))
        self.drift = RedisDriftStore(self.store.client, prefix)
        self.watch = ConceptDriftWatch(
            self.drift,
            lambda: self.serving.current.catalog,
            dict,
            lambda kind, name, version, **fields: events.append((kind, name, version, fields)),
            ConceptDriftMetrics(WorkerMetrics()),
            model=self.serving.current.scorer.model,
            replace=self.serving.replace_session,
        )
        self.watch.check_once()  # the first look takes the frozen model, as at start

    def frozen(self, x: np.ndarray) -> np.ndarray:
        return self.model.session.run(None, {"float_input": x.astype(np.float32)})[1][:, 1].astype(np.float64)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """What this worker serves for ``x`` after a look at the shared stage."""
        self.watch.check_once()
        model = self.serving.current.scorer.model("fraud@1")
        assert model is not None
        return model.session.run(None, {"float_input": x.astype(np.float32)})[1][:, 1].astype(np.float64)


def test_a_calibrated_frozen_model_learns_its_stage_once_and_every_worker_serves_it(
    redis_server: devstack.ServerInfo, tmp_path: Path
) -> None:
    """The shipped GBDT with a [calibration] stage: the decider learns the stage from the label stream (the frozen
    model's scores of the logged features) exactly as the offline replay does, both workers serve the same
    calibrated graph, and after the drift of make demo's act 2 it is right far more often than the trees."""
    shutil.copytree(REPO / "models" / "fraud" / "1", tmp_path / "fraud" / "1")
    card = tmp_path / "fraud" / "1" / "card.toml"
    card.write_text(card.read_text() + '\n[calibration]\nfeatures = ["merchant_risk", "velocity_1h", "distance_km"]\n')
    model = model_repository.load_version(tmp_path / "fraud" / "1")
    spec = model.card.calibration
    assert spec is not None
    prefix = f"t{uuid.uuid4().hex[:8]}"
    events: list[Any] = []
    workers = [Calibrating(redis_server.address, prefix, model, events) for _ in range(2)]
    x = synthetic.transactions(8 * CHUNK, seed=35).astype(np.float32).astype(np.float64)
    logit = np.where(np.arange(len(x)) < 2 * CHUNK, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    y = synthetic.labels_of(logit, seed=35)
    frozen = workers[0].frozen(x)
    reference, monitor = calibration.initial(spec), LabelMonitor(model.card.concept_drift)
    served_accuracy, frozen_accuracy = [], []
    for c in range(8):
        rows = slice(c * CHUNK, (c + 1) * CHUNK)
        served = workers[c % 2].scores(x[rows])
        served_accuracy.append(float(np.mean((served >= 0.5) == (y[rows] == 1))))
        frozen_accuracy.append(float(np.mean((frozen[rows] >= 0.5) == (y[rows] == 1))))
        workers[0].store.log_predictions(
            LoggedPrediction(f"r{i}", "fraud", "1", float(s), 0.5, 10.0, x[i].tolist())
            for i, s in zip(range(rows.start, rows.stop), served, strict=True)
        )
        workers[0].store.apply_labels([(f"r{i}", int(y[i])) for i in range(rows.start, rows.stop)], 11.0)
        # the offline replay of one decider's look at this chunk
        reference = calibration.learn_many(reference, frozen[rows], x[rows], y[rows], spec)
        rises = [d for d in monitor.learn_many(served, y[rows], 0.5) if d.rising]
        if rises:
            since = slice(rises[-1].position + 1, rows.stop)
            reference = calibration.learn_many(learner.restart(reference), frozen[since], x[since], y[since], spec)
    workers[1].watch.check_once()  # the look that takes the last chunk's labels
    shared = workers[0].drift.read("fraud", "1", "calibration").online
    assert shared is not None and shared.updates == len(y)
    np.testing.assert_allclose(shared.z, reference.z, rtol=1e-9, atol=1e-9)
    probe = synthetic.transactions(1000, seed=36)
    one, two = workers[0].scores(probe), workers[1].scores(probe)
    assert np.max(np.abs(one - two)) <= 1e-6
    state = learner.FtrlState(shared.z, shared.n, reference.mean, reference.scale, spec.params)
    np.testing.assert_allclose(one, calibration.score_many(state, workers[0].frozen(probe), probe, spec), atol=1e-5)
    assert np.mean(served_accuracy[4:]) > np.mean(frozen_accuracy[4:]) + 0.15, (served_accuracy, frozen_accuracy)
    assert [e for e in events if e[0] == "concept-drift"], "the drift of the frozen model's errors is reported"
