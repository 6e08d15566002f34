"""The three serving modes follow the serving state alike (both engines): after ``streamer models pin``,
``models promote`` and ``models rollback``, a worker (through Kafka), ``streamer serve`` (OIP v2 over HTTP) and
``streamer batch`` (a file) all answer from the version the command made the champion, and ``models list``
says it is the one serving. Versions 1 and 2 are different models, so a version is also a different score.

A worker and ``serve`` keep following the control channel while they run (within ``control_interval_s``: they
are polled until they answer from the new version, bounded); ``batch`` reads it once at start, so each run
after a command must answer from the new version at once, and says which version served in its summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamer import synthetic
from streamer.adapters import devstack
from tests.conftest import ServeProcess
from tests.e2e.conftest import Topics, WorkerProcess, produce
from tests.model_versions import GBDT, LOGISTIC, write_version

CONFIG = """
[redis]
key_prefix = "{prefix}"

[models]
control_interval_s = 0.3
"""
ROW = synthetic.transactions(1, seed=97)[0]


def scores_of(model: Path) -> float:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return float(session.run(None, {"float_input": ROW[None, :].astype(np.float32)})[1][0, 1])


def environment(settings: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | settings


class Predictions:
    """A read_committed reader of the predictions topic that finds one request's prediction by id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"modes-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._seen: dict[str, dict] = {}

    def find(self, request_id: str, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while request_id not in self._seen:
            assert time.monotonic() < deadline, f"no prediction for {request_id} within {timeout_s} s"
            for message in self._consumer.consume(num_messages=500, timeout=0.2):
                if message.error() is None:
                    body = json.loads(message.value())
                    self._seen[body["id"]] = body
        return self._seen[request_id]

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    """Start ``streamer serve --port 0`` in ``tmp_path`` (its ``streamer.toml``); yields the OIP address."""
    started: list[ServeProcess] = []

    def start(settings: dict[str, str]) -> str:
        started.append(ServeProcess(tmp_path, environment(settings), start_timeout_s=60))
        return f"http://{started[-1].address}"

    yield start
    for serving in started:
        assert serving.stop(20) == 0, serving.log()[-3000:]


def test_pin_promote_and_rollback_reach_the_worker_serve_and_batch_alike(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    serve_process: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    prefix = f"modes{uuid.uuid4().hex[:6]}"
    models = tmp_path / "models"
    write_version(models, "fraud", 1, GBDT)
    write_version(models, "fraud", 2, LOGISTIC)
    expected = {1: scores_of(GBDT / "model.onnx"), 2: scores_of(LOGISTIC / "model.onnx")}
    assert abs(expected[1] - expected[2]) > 1e-3, "the two versions must score this row differently"
    config = CONFIG.format(prefix=prefix)
    (tmp_path / "streamer.toml").write_text(config)
    t = topics(partitions=2)
    settings = {
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        **t.env(),
    }
    worker = worker_factory(t, config, STREAMER_REDIS_URL=redis_server.address, STREAMER_MODELS_DIR=str(models))
    oip = serve_process(settings)
    worker.wait_assigned()
    predictions = Predictions(kafka_broker.address, t.predictions)
    probes = iter(range(10**6))
    features = synthetic.features_of(ROW)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "streamer.cli", *args],
            cwd=tmp_path,
            env=environment(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result

    def from_worker() -> tuple[int, float]:
        request_id = f"w-{next(probes)}"
        body = json.dumps({"id": request_id, "model": "fraud", "features": features}).encode()
        produce(kafka_broker.address, t.requests, [(b"key", body, None)])
        prediction = predictions.find(request_id)
        return int(prediction["version"]), prediction["score"]

    def from_serve() -> tuple[int, float]:
        request = {"inputs": [{"name": "float_input", "shape": [1, 6], "datatype": "FP32", "data": ROW.tolist()}]}
        posted = urllib.request.Request(
            f"{oip}/v2/models/fraud/infer", json.dumps(request).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(posted, timeout=10) as response:
            answer = json.loads(response.read())
        score = next(o["data"][0] for o in answer["outputs"] if o["name"] == "score")
        return int(answer["model_version"]), score

    def from_batch() -> tuple[int, float]:
        rows = tmp_path / "rows.jsonl"
        rows.write_text(json.dumps({"id": "b-1", "model": "fraud", "features": features}) + "\n")
        result = command("batch", str(rows), "-o", str(tmp_path / "scored.jsonl"), "--quiet")
        prediction = json.loads((tmp_path / "scored.jsonl").read_text())
        assert f"served by fraud@{prediction['version']}" in result.stderr, result.stderr
        return int(prediction["version"]), prediction["score"]

    def listed() -> int:
        rows = json.loads(command("models", "list", "--json").stdout)
        return next(row["version"] for row in rows if row["name"] == "fraud" and row["status"] == "serving")

    def all_serve(version: int) -> None:
        for mode, ask in (("worker", from_worker), ("serve", from_serve)):
            deadline = time.monotonic() + 30  # they follow within control_interval_s; bounded generously
            while (answer := ask())[0] != version:
                assert time.monotonic() < deadline, f"{mode} still answers from version {answer[0]}, not {version}"
                time.sleep(0.3)
            assert abs(answer[1] - expected[version]) < 1e-5, (mode, answer)
        answer = from_batch()  # read once at its start: right at once
        assert answer[0] == version and abs(answer[1] - expected[version]) < 1e-5, answer
        assert listed() == version

    try:
        all_serve(2)  # no state yet: the highest version
        command("models", "pin", "fraud", "1")
        all_serve(1)
        command("models", "promote", "fraud", "2")
        all_serve(2)
        command("models", "rollback", "fraud")  # back to the champion before the promotion
        all_serve(1)
    finally:
        predictions.close()
    assert worker.terminate() == 0
