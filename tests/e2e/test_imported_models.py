"""From a trained model to predictions on the stream: imported while a worker runs, served as its source answers.

One worker (one engine: the import does not depend on it, and a worker start costs seconds) serves a model
repository while six models trained here are imported into it (scikit-learn logistic regression, random
forest, gradient boosting and a scaler pipeline; XGBoost; LightGBM). Hot reload picks each up; requests naming
them go through Kafka, and every prediction's score is the source model's own probability within 1e-5. Then a
second version is imported with ``streamer models import --canary 0.1``: it serves exactly the keys whose hash
falls in the lowest tenth (``core.routing.key_fraction``), the champion the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamer.adapters import devstack
from streamer.core.routing import key_fraction
from streamer.model_import.importer import ImportOptions, import_model
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.model_import_data import (
    FEATURES,
    KINDS,
    NAMED_KINDS,
    PICKLED_KINDS,
    dataset,
    positive_probability,
    save,
    train,
    write_csv,
)

PER_MODEL = 40


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}\n{worker.log()[-3000:]}")


def request(model: str, request_id: str, row: np.ndarray) -> bytes:
    features = {name: float(value) for name, value in zip(FEATURES, row.astype(np.float32).tolist(), strict=True)}
    return json.dumps({"id": request_id, "model": model, "features": features}).encode()


@pytest.mark.e2e
@pytest.mark.parametrize("engine", ["batch"])
def test_imported_models_serve_like_their_sources_and_a_canary_import_serves_its_share(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    t = topics(partitions=2)
    config = (
        f'[redis]\nkey_prefix = "{unique_name("imp")}"\n'
        "[models]\nwatch_interval_s = 1.0\nsettle_s = 0.3\ncontrol_interval_s = 0.5\n"
    )
    worker = worker_factory(t, config, STREAMER_MODELS_DIR=str(models), STREAMER_REDIS_URL=redis_server.address)
    x, y = dataset(2400, seed=5)
    train_x, train_y, test_x = x[:1600], y[:1600], x[1600:]
    reference = write_csv(tmp_path / "reference.csv", train_x)
    trained = {}
    for kind in KINDS:  # while the worker starts
        trained[kind] = train(kind, train_x, train_y)
        options = ImportOptions(
            source=str(save(kind, trained[kind], tmp_path / kind, pickle=kind in PICKLED_KINDS)),
            name=f"imp-{kind}",
            models_dir=models,
            features=None if kind in NAMED_KINDS else FEATURES,
            reference=reference,
            sample=300,
            trust_pickle=kind in PICKLED_KINDS,
            round_thresholds=kind == "lightgbm",
        )
        import_model(options, None, lambda line: None)
    worker.wait_assigned()
    for kind in KINDS:
        # loaded by the start-up scan, or hot-reloaded after it
        loaded = re.compile(rf"(loaded model|hot reload: serving) imp-{kind}@1 from")
        wait_for(lambda p=loaded: bool(p.search(worker.log())), 60, f"imp-{kind}@1 served", worker)

    rows = test_x[: PER_MODEL * len(KINDS)]
    messages = [
        (f"k{i}".encode(), request(f"imp-{kind}", f"{kind}-{i}", rows[i]), None)
        for k, kind in enumerate(KINDS)
        for i in range(k * PER_MODEL, (k + 1) * PER_MODEL)
    ]
    produce(kafka_broker.address, t.requests, messages)
    predictions = [json.loads(m.value()) for m in read_all(kafka_broker.address, [t.predictions], len(messages))]
    assert len(predictions) == len(messages), [m for m in predictions if "score" not in m][:3]
    by_id = {p["id"]: p for p in predictions}
    for k, kind in enumerate(KINDS):
        ids = range(k * PER_MODEL, (k + 1) * PER_MODEL)
        served = np.array([by_id[f"{kind}-{i}"]["score"] for i in ids])
        expected = positive_probability(kind, trained[kind], rows[k * PER_MODEL : (k + 1) * PER_MODEL])
        np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0, err_msg=kind)
        assert {by_id[f"{kind}-{i}"]["version"] for i in ids} == {"1"}

    # A second version of imp-gbm, imported by the command a user types, as a 10 % canary.
    challenger = train("logreg", train_x, train_y)
    source = save("logreg", challenger, tmp_path / "challenger")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
    }
    command = [sys.executable, "-m", "streamer", "models", "import", str(source), "--name", "imp-gbm"]
    command += ["--features", ",".join(FEATURES), "--reference", str(reference), "--canary", "0.1"]
    cwd = worker.log_path.parent  # its streamer.toml: the same Redis key prefix as the worker
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"imp-gbm: model-canary \(generation \d+\): champion 1, canary \{2: 0\.1\}", result.stdout)
    share = 'streamer_model_traffic_share{model="imp-gbm",role="canary",version="2"}'
    wait_for(lambda: worker.metrics().get(share) == pytest.approx(0.1), 60, "the canary serving", worker)

    keys = [f"user-{i}".encode() for i in range(400)]
    canary_rows = test_x[:400]
    messages = [(key, request("imp-gbm", f"c-{i}", canary_rows[i]), None) for i, key in enumerate(keys)]
    produce(kafka_broker.address, t.requests, messages)
    answers = {
        p["id"]: p
        for p in (
            json.loads(m.value()) for m in read_all(kafka_broker.address, [t.predictions], len(predictions) + 400)
        )
        if p["id"].startswith("c-")
    }
    assert len(answers) == 400
    expected_versions = ["2" if key_fraction("imp-gbm", key) < 0.1 else "1" for key in keys]
    assert [answers[f"c-{i}"]["version"] for i in range(400)] == expected_versions
    assert 20 <= expected_versions.count("2") <= 60  # about a tenth of the keys
    canary = [i for i in range(400) if expected_versions[i] == "2"]
    served = np.array([answers[f"c-{i}"]["score"] for i in canary])
    expected = positive_probability("logreg", challenger, canary_rows[canary])
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
