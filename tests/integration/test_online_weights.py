"""Online learning against a real redis-server and ONNX Runtime: the Lua FTRL step, once-only learning,
two concurrent learners, the logistic ONNX round trip, bounded-staleness refresh and freezing."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from streamer import synthetic
from streamer.adapters import devstack, model_repository, online, onnx_models
from streamer.adapters.onnx_logistic import build_logistic, read_logistic, read_logistic_file
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.adapters.redis_state import DUPLICATE, JOINED, LEARNED, LoggedPrediction, RedisStateStore
from streamer.core import learner
from streamer.core.errors import ModelError
from streamer.core.routing import Catalog
from streamer.core.state import OnlineWeights
from streamer.services.online_refresh import OnlineRefresher
from streamer.serving import ModelSet, ServingModels, cards_of
from tests.conftest import REPO

ONLINE_DIR = REPO / "examples" / "models" / "fraud-online" / "1"


@pytest.fixture
def store(redis_server: devstack.ServerInfo) -> RedisStateStore:
    return RedisStateStore.from_url(redis_server.address, prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def model() -> onnx_models.LoadedModel:
    return model_repository.load_version(ONLINE_DIR)


def logged(model: onnx_models.LoadedModel, x: np.ndarray, token: str) -> list[LoggedPrediction]:
    card = model.card
    return [
        LoggedPrediction(f"{token}-{i}", card.name, str(card.version), 0.5, 0.5, 1.0, row.tolist())
        for i, row in enumerate(x.astype(np.float32))
    ]


def learned_in_redis(
    store: RedisStateStore, model: onnx_models.LoadedModel, x: np.ndarray, y: np.ndarray, token: str
) -> OnlineWeights:
    """Log ``model``'s predictions of ``x``, send their labels ``y`` in batches of 400 (every one learnt), and
    return the shared state the Lua learner reached."""
    predictions = logged(model, x, token)
    store.log_predictions(predictions)
    batch = [(p.id, int(label)) for p, label in zip(predictions, y, strict=True)]
    codes = [c for b in range(0, len(batch), 400) for c in store.apply_labels(batch[b : b + 400], 5.0)]
    assert codes == [LEARNED] * len(batch)
    shared = store.online_weights("fraud-online", "1")
    assert shared is not None and shared.updates == len(batch)
    return shared


def test_the_shipped_onnx_weights_round_trip_and_score_like_the_learner(model: onnx_models.LoadedModel) -> None:
    weights = read_logistic_file(str(model.path))
    x = synthetic.transactions(500, seed=3).astype(np.float32)
    shipped = model.session.run(None, {"float_input": x})[1][:, 1]
    state = learner.from_weights(weights.coef, weights.bias, weights.mean, weights.scale, model.card.online)
    np.testing.assert_allclose(learner.predict_proba_many(state, x), shipped, atol=1e-5)
    rebuilt = ort.InferenceSession(build_logistic(model.card, weights), providers=["CPUExecutionProvider"])
    label, probabilities = rebuilt.run(None, {"float_input": x})
    np.testing.assert_allclose(probabilities[:, 1], shipped, atol=1e-6)
    assert label.tolist() == (probabilities[:, 1] > 0.5).astype(int).tolist()


def test_a_graph_that_is_not_logistic_is_refused() -> None:
    with pytest.raises(ModelError, match="must be \\[Scaler \\+\\] LinearClassifier"):
        read_logistic(onnx.load(str(REPO / "models" / "fraud" / "1" / "model.onnx")), "fraud")


def test_labels_learn_in_redis_exactly_as_the_reference_and_once_each(
    store: RedisStateStore, model: onnx_models.LoadedModel
) -> None:
    spec, start = online.spec_of(model)
    assert store.register_online("fraud-online", "1", spec, start.z, start.n)
    assert not store.register_online("fraud-online", "1", spec, start.z * 0, start.n)  # existing state wins
    x = synthetic.transactions(1500, seed=9)
    y = synthetic.labels(x, seed=9)
    predictions = logged(model, x, "a")
    store.log_predictions(predictions)
    batch = [(p.id, int(label)) for p, label in zip(predictions, y, strict=True)]
    codes = [c for b in range(0, 1500, 500) for c in store.apply_labels(batch[b : b + 500], 5.0)]
    assert codes == [LEARNED] * 1500 and store.learner_of(LEARNED) == ("fraud-online", "1")
    reference = learner.learn_many(start, x.astype(np.float32), y)
    shared = store.online_weights("fraud-online", "1")
    assert shared is not None and shared.updates == 1500
    np.testing.assert_allclose(shared.z, reference.z, atol=1e-9)
    np.testing.assert_allclose(shared.n, reference.n, atol=1e-9)
    # a replay after a crash: duplicates, and the weights do not move
    assert store.apply_labels(batch[:300], 6.0) == [DUPLICATE] * 300
    again = store.online_weights("fraud-online", "1")
    assert again is not None and again.updates == 1500 and np.array_equal(again.z, shared.z)


@pytest.mark.parametrize("l1", [0.05, 2.0])
def test_with_l1_the_lua_learner_equals_the_reference_from_the_shipped_weights(
    store: RedisStateStore, model: onnx_models.LoadedModel, l1: float
) -> None:
    """l1 > 0: the shipped weights are the starting state (from_weights inverts the l1 shrinkage), the Lua step
    equals core.learner's, and the served graph rebuilt from the state at start scores like the shipped one."""
    params = dataclasses.replace(model.card.online, l1=l1)
    model = dataclasses.replace(model, card=dataclasses.replace(model.card, online=params))
    online.check_online(model)
    [registered] = online.register(store, [model])
    spec, start = online.spec_of(model)
    shared = store.online_weights("fraud-online", "1")
    assert shared is not None and np.array_equal(shared.z, start.z) and not shared.n.any()
    x = synthetic.transactions(1200, seed=19).astype(np.float32)
    served = ort.InferenceSession(build_logistic(model.card, online.weights_of(registered.spec, shared)))
    shipped = model.session.run(None, {"float_input": x[:200]})[1]
    np.testing.assert_allclose(served.run(None, {"float_input": x[:200]})[1], shipped, atol=1e-5)

    y = 1 - synthetic.labels(x, seed=19)  # a rule the shipped weights get wrong: l1 has work to do
    shared = learned_in_redis(store, model, x, y, f"l1-{l1}")
    reference = learner.learn_many(start, x, y)
    np.testing.assert_allclose(shared.z, reference.z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shared.n, reference.n, rtol=1e-9, atol=1e-9)
    w_lua, w_ref = learner.weights_from_zn(shared.z, shared.n, spec.params), learner.weights(reference)
    assert np.array_equal(w_lua == 0, w_ref == 0)  # the same coordinates cut to exactly 0 by l1
    np.testing.assert_allclose(w_lua, w_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("rate_floor", "l1"), [(0.05, 0.0), (0.1, 0.05), (0.3, 0.0)])
def test_with_a_learning_rate_floor_the_lua_learner_equals_the_reference(
    store: RedisStateStore, model: onnx_models.LoadedModel, rate_floor: float, l1: float
) -> None:
    """rate_floor > 0: the Lua step caps each coordinate's n where its step meets the floor, exactly as
    core.learner does (0.3 = alpha / beta: a constant step, n stays 0); the cap is reached, so it is tested."""
    assert model.card.online is not None
    unfloored_params = dataclasses.replace(model.card.online, l1=l1)
    params = dataclasses.replace(unfloored_params, rate_floor=rate_floor)
    model = dataclasses.replace(model, card=dataclasses.replace(model.card, online=params))
    online.check_online(model)
    online.register(store, [model])
    _, start = online.spec_of(model)
    x = synthetic.transactions(1200, seed=29).astype(np.float32)
    y = 1 - synthetic.labels(x, seed=29)  # a rule the shipped weights get wrong: large gradients, n grows fast
    shared = learned_in_redis(store, model, x, y, f"floor-{rate_floor}")
    reference = learner.learn_many(start, x, y)
    assert np.all(reference.n <= params.n_max) and np.any(reference.n == params.n_max)  # the floor held
    np.testing.assert_allclose(shared.z, reference.z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shared.n, reference.n, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        learner.weights_from_zn(shared.z, shared.n, params), learner.weights(reference), rtol=1e-9, atol=1e-12
    )
    unfloored = learner.learn_many(dataclasses.replace(start, params=unfloored_params), x, y)
    assert not np.allclose(unfloored.z, reference.z)  # without the floor the state differs: the floor acted


def test_registering_again_and_late_is_idempotent_and_keeps_earlier_learner_codes(
    store: RedisStateStore, model: onnx_models.LoadedModel, tmp_path: Path
) -> None:
    """A version dropped in while the worker runs is registered with the same call as at start: it is seeded,
    learns from the next batch, and neither resets nor renumbers the models registered before."""
    online.register(store, [model])
    x = synthetic.transactions(600, seed=23)
    y = synthetic.labels(x, seed=23)
    first = logged(model, x[:300], "late-a")
    store.log_predictions(first)
    assert store.apply_labels([(p.id, int(v)) for p, v in zip(first, y[:300], strict=True)], 5.0) == [LEARNED] * 300

    version_dir = tmp_path / "fraud-online" / "2"
    shutil.copytree(ONLINE_DIR, version_dir)
    card = version_dir / "card.toml"
    card.write_text(card.read_text().replace("version = 1", "version = 2", 1))
    late = model_repository.load_version(version_dir)
    online.check_online(late)
    assert [m.card.ref for m in online.register(store, [model, late])] == ["fraud-online@1", "fraud-online@2"]
    one, two = store.online_weights("fraud-online", "1"), store.online_weights("fraud-online", "2")
    assert one is not None and one.updates == 300  # not reset by registering again
    _, start = online.spec_of(late)
    assert two is not None and two.updates == 0 and np.array_equal(two.z, start.z)

    second = logged(model, x[300:], "late-b")
    third = [dataclasses.replace(p, id=f"late-c-{k}", version="2") for k, p in enumerate(second)]
    store.log_predictions(second + third)
    labels = [(p.id, int(v)) for p, v in zip(second + third, np.concatenate([y[300:], y[300:]]), strict=True)]
    codes = store.apply_labels(labels, 5.0)
    assert codes == [LEARNED] * 300 + [LEARNED + 1] * 300
    assert store.learner_of(LEARNED) == ("fraud-online", "1") and store.learner_of(LEARNED + 1) == ("fraud-online", "2")
    two = store.online_weights("fraud-online", "2")
    reference = learner.learn_many(start, x[300:].astype(np.float32), y[300:])
    assert two is not None and two.updates == 300
    np.testing.assert_allclose(two.z, reference.z, atol=1e-9)


def test_a_shared_state_of_another_width_is_not_learnt_and_breaks_nothing(
    store: RedisStateStore, model: onnx_models.LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    """State left in Redis by a different model under the same name@version: labels still join, nothing learns,
    and an error says which key to delete -- never a Lua error that would hold every later label batch."""
    store._redis.hset(f"{store.prefix}:online:fraud-online:1", mapping={"z1": "1", "n1": "0", "updates": "7"})
    with caplog.at_level("ERROR"):
        online.register(store, [model])
    assert "has 1 weights, the model 7: not learning" in caplog.text
    x = synthetic.transactions(20, seed=29)
    predictions = logged(model, x, "width")
    store.log_predictions(predictions)
    assert store.apply_labels([(p.id, 1) for p in predictions], 5.0) == [JOINED] * 20
    shared = store.online_weights("fraud-online", "1")
    assert shared is not None and shared.updates == 7


def test_two_workers_learning_concurrently_reach_the_weights_of_one(
    redis_server: devstack.ServerInfo, model: onnx_models.LoadedModel
) -> None:
    spec, start = online.spec_of(model)
    x = synthetic.transactions(4000, seed=12)
    y = synthetic.labels(x, seed=12)
    one, two = (RedisStateStore.from_url(redis_server.address, prefix=f"t{uuid.uuid4().hex[:8]}") for _ in "12")
    for store in (one, two):
        store.register_online("fraud-online", "1", spec, start.z, start.n)
        store.log_predictions(logged(model, x, "b"))
    labels = [(f"b-{i}", int(label)) for i, label in enumerate(y)]
    # Two workers, the labels split by partition as Kafka would split them, each in batches of 200.
    rows = [[np.arange(k, 4000, 2)[b : b + 200] for b in range(0, 2000, 200)] for k in (0, 1)]
    batches = [[[labels[i] for i in batch] for batch in worker] for worker in rows]
    round_robin = [batches[w][b] for b in range(10) for w in (0, 1)]
    for batch in round_robin:  # one worker, the same batches, alternating
        one.apply_labels(batch, 5.0)
    second = RedisStateStore.from_url(redis_server.address, prefix=two.prefix)
    second.online = dict(two.online)

    def learn(worker: RedisStateStore, own: list[list[tuple[str, int]]]) -> None:
        for batch in own:
            worker.apply_labels(batch, 5.0)

    threads = [threading.Thread(target=learn, args=(w, batches[k])) for k, w in enumerate((two, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sequential, concurrent = one.online_weights("fraud-online", "1"), two.online_weights("fraud-online", "1")
    assert sequential is not None and concurrent is not None
    assert sequential.updates == concurrent.updates == 4000  # no update lost or doubled
    order = np.concatenate([rows[w][b] for b in range(10) for w in (0, 1)])
    x32 = x.astype(np.float32)
    reference = learner.learn_many(start, x32[order], y[order])
    np.testing.assert_allclose(sequential.z, reference.z, atol=1e-9)  # one worker == core.learner

    # Each Lua call is atomic, so the concurrent result is the sequential one for *some* interleaving of the two
    # workers' batches, and FTRL depends on the order. The bound: as far from the round-robin result as other
    # interleavings of the same batches are -- the two extreme ones and random ones, computed with core.learner
    # -- not a tolerance picked by hand.
    w_one = learner.weights(reference)
    rng = np.random.default_rng(0)
    spread = 0.0
    extremes = [np.array([0] * 10 + [1] * 10), np.array([1] * 10 + [0] * 10)]  # one worker entirely first
    for picks in extremes + [rng.permutation([0] * 10 + [1] * 10) for _ in range(10)]:
        taken = [0, 0]
        shuffled = []
        for w in picks:
            shuffled.append(rows[w][taken[w]])
            taken[w] += 1
        order = np.concatenate(shuffled)
        w_r = learner.weights(learner.learn_many(start, x32[order], y[order]))
        spread = max(spread, float(np.linalg.norm(w_r - w_one)))
    w_two = learner.weights_from_zn(concurrent.z, concurrent.n, spec.params)
    assert np.linalg.norm(w_two - w_one) <= 1.25 * spread


def test_the_refresher_serves_the_shared_weights_and_freeze_writes_a_plain_version(
    store: RedisStateStore, model: onnx_models.LoadedModel, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(ONLINE_DIR, models_dir / "fraud-online" / "1")
    model = model_repository.load_version(models_dir / "fraud-online" / "1")
    serving = ServingModels(ModelSet(Catalog(cards_of([model])), OnnxScorer({"fraud-online": {1: model}})))
    metrics = WorkerMetrics()
    refresher = OnlineRefresher(store, serving, metrics, refresh_s=0.05)
    refresher.add(model)  # as at start, or when the version is dropped in while the worker runs
    refresher.start()
    x = synthetic.transactions(800, seed=21)
    y = 1 - synthetic.labels(x, seed=21)  # a rule the shipped weights get wrong: the weights must move
    store.log_predictions(logged(model, x, "c"))
    store.apply_labels([(f"c-{i}", int(label)) for i, label in enumerate(y)], 5.0)
    shared = store.online_weights("fraud-online", "1")
    assert shared is not None
    expected = learner.weights_from_zn(shared.z, shared.n, model.card.online)
    probe = synthetic.transactions(50, seed=22).astype(np.float32)
    _, start = online.spec_of(model)
    want = 1 / (1 + np.exp(-(learner.standardise(start, probe) @ expected)))
    deadline = time.monotonic() + 5
    served = None
    while time.monotonic() < deadline:
        served = serving.current.infer(model.card, probe)["probabilities"][:, 1]
        if np.allclose(served, want, atol=1e-5):
            break
        time.sleep(0.02)
    refresher.stop()
    np.testing.assert_allclose(served, want, atol=1e-5)
    samples = metrics.exposition().decode()
    assert 'streamer_online_model_updates{model="fraud-online",version="1"} 800.0' in samples

    target = online.freeze(store, model, models_dir)
    frozen = model_repository.load_version(target)
    assert frozen.card.ref == "fraud-online@2" and frozen.card.online is None
    assert "after 800 online updates" in frozen.card.card["frozen_from"]
    got = frozen.session.run(None, {"float_input": probe})[1][:, 1]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_streamer_models_freeze_from_the_command_line(
    redis_server: devstack.ServerInfo, model: onnx_models.LoadedModel, tmp_path: Path
) -> None:
    from tests.integration.test_topics_and_models import run

    models_dir = tmp_path / "models"
    shutil.copytree(ONLINE_DIR, models_dir / "fraud-online" / "1")
    shutil.copytree(REPO / "models" / "fraud" / "1", models_dir / "fraud" / "1")
    env = {"STREAMER_MODELS_DIR": str(models_dir), "STREAMER_REDIS_URL": redis_server.address}
    config = tmp_path / "streamer.toml"
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config.write_text(f'[redis]\nkey_prefix = "{prefix}"\n')
    never_served = run(["models", "freeze", "fraud-online"], tmp_path, **env)
    assert never_served.returncode == 2 and "no shared weights in Redis" in never_served.stderr
    not_online = run(["models", "freeze", "fraud"], tmp_path, **env)
    assert not_online.returncode == 2 and "is not an online model" in not_online.stderr
    assert len(not_online.stderr.strip().splitlines()) == 1 and "Traceback" not in not_online.stderr

    store = RedisStateStore.from_url(redis_server.address, prefix=prefix)
    online.register(store, [model])
    frozen = run(["models", "freeze", "fraud-online"], tmp_path, **env)
    assert frozen.returncode == 0, frozen.stderr
    assert "froze fraud-online@1 into fraud-online@2" in frozen.stdout
    listed = run(["models", "list", "--json"], tmp_path, **env)
    rows = {(r["name"], r["version"]): r["status"] for r in json.loads(listed.stdout)}
    assert rows[("fraud-online", 2)] == "serving" and rows[("fraud-online", 1)] == "loaded"
