"""Open Inference Protocol v2 on a running worker (both engines), checked with Triton's HTTP client, and the
same answers both ways: rows scored through Kafka and over HTTP get bit-identical scores and outputs.

One worker per engine for the module, started together (``worker.oip_port`` set): the stream and the HTTP
server share its model set and its scoring path. The stream side is driven with ``streamer.client``.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.client import Prediction, Request, ScoringClient
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess

pytestmark = pytest.mark.e2e

ENGINES = ("faust", "batch")
FEATURES = ("amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days")
ROWS = synthetic.transactions(1000, seed=16).astype(np.float32)


@dataclass
class Served:
    engine: str
    topics: Topics
    worker: WorkerProcess
    oip: str  # host:port

    def triton(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.oip, concurrency=8)


@pytest.fixture(scope="module")
def workers(kafka_broker: devstack.ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    served: dict[str, Served] = {}
    try:
        for engine in ENGINES:
            token = uuid.uuid4().hex[:8]
            topics = Topics(*(f"oip-{engine}-{kind}-{token}" for kind in ("req", "pred", "fb", "dlq", "grp")))
            KafkaAdmin(kafka_broker.address).create_topics(
                [topics.requests, topics.predictions, topics.feedback, topics.dlq], 2
            )
            workdir = tmp_path_factory.mktemp(f"oip-{engine}")
            port = devstack.free_port()
            settings = {
                "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
                "STREAMER_MODELS_DIR": str(REPO / "models"),
                "STREAMER_METRICS_PORT": "0",
                "STREAMER_OIP_PORT": str(port),
                "STREAMER_STATE_DIR": str(workdir / "state"),
                "STREAMER_ENGINE": engine,
                **topics.env(),
            }
            log_path = workdir / "worker.log"
            worker = WorkerProcess(devstack.start_worker(workdir, log_path, settings), log_path)
            served[engine] = Served(engine, topics, worker, f"127.0.0.1:{port}")
        for one in served.values():
            one.worker.wait_assigned()
            assert f"oip: http://{one.oip}/v2" in one.worker.log()
        yield served
    finally:
        for one in served.values():
            if one.worker.process.poll() is None:
                one.worker.process.kill()
                one.worker.process.wait(10)


@pytest.fixture(params=ENGINES)
def served(workers: dict[str, Served], request: pytest.FixtureRequest) -> Served:
    return workers[request.param]


def matrix_input(rows: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("float_input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    return tensor


def test_triton_client_reads_metadata_readiness_and_scores(served: Served) -> None:
    client = served.triton()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("fraud", "1")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("fraud")
    assert metadata["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 6]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "outputs.label": "INT64",
        "probabilities": "FP32",
        "score": "FP64",
        "label": "INT64",
    }
    assert metadata["parameters"]["features"] == ",".join(FEATURES)
    one = client.infer("fraud", [matrix_input(ROWS[:1])], request_id="one-row")
    assert one.get_response()["id"] == "one-row"
    assert one.get_response()["parameters"] == {"id": "one-row", "model": "fraud", "version": "1"}
    assert one.as_numpy("score").shape == (1,) and one.as_numpy("probabilities").shape == (1, 2)
    thousand = client.infer("fraud", [matrix_input(ROWS)], model_version="1")  # binary outputs asked, JSON given
    scores = thousand.as_numpy("score")
    assert scores.shape == (1000,) and scores[0] == one.as_numpy("score")[0]
    assert np.array_equal(thousand.as_numpy("label"), (scores >= 0.5).astype(np.int64))
    with pytest.raises(InferenceServerException) as wrong_shape:
        client.infer("fraud", [matrix_input(ROWS[:3, :5])])
    assert wrong_shape.value.status() == "400"
    assert wrong_shape.value.message() == "schema: input 'float_input' has 5 columns; model fraud@1 takes 6"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [matrix_input(ROWS[:1])])
    assert (unknown.value.status(), unknown.value.message()) == ("404", "unknown-model: no model named 'nope'")
    with pytest.raises(InferenceServerException) as unknown_version:
        client.infer("fraud", [matrix_input(ROWS[:1])], model_version="9")
    assert unknown_version.value.status() == "404"


def test_same_answers_through_kafka_and_over_http(kafka_broker: devstack.ServerInfo, served: Served) -> None:
    count = 300
    rows = ROWS[:count]
    stream = ScoringClient(
        kafka_broker.address,
        requests_topic=served.topics.requests,
        predictions_topic=served.topics.predictions,
        dlq_topic=served.topics.dlq,
        timeout_s=30.0,
    )
    try:
        requests = [
            Request({name: float(v) for name, v in zip(FEATURES, row.tolist(), strict=True)}, key=f"k{i}", id=f"r{i}")
            for i, row in enumerate(rows)
        ]
        through_kafka = stream.score_many(requests)
    finally:
        stream.close()
    assert all(isinstance(p, Prediction) for p in through_kafka)
    kafka_scores = np.array([p.score for p in through_kafka])
    kafka_probabilities = np.array([p.outputs["probabilities"] for p in through_kafka])
    client = served.triton()
    # one request of 300 rows
    whole = client.infer("fraud", [matrix_input(rows)])
    assert whole.as_numpy("score").tobytes() == kafka_scores.tobytes()
    assert whole.as_numpy("probabilities").tobytes() == kafka_probabilities.astype(np.float32).tobytes()
    assert whole.as_numpy("label").tolist() == [p.label for p in through_kafka]

    # 300 concurrent one-row requests, one tensor per feature (batched together on the server)
    def one(i: int) -> float:
        inputs = []
        for k, name in enumerate(FEATURES):
            tensor = triton.InferInput(name, [1], "FP32")
            tensor.set_data_from_numpy(rows[i : i + 1, k].copy(), binary_data=False)
            inputs.append(tensor)
        return float(triton.InferenceServerClient(served.oip).infer("fraud", inputs).as_numpy("score")[0])

    with ThreadPoolExecutor(16) as pool:
        singles = np.array(list(pool.map(one, range(count))))
    assert singles.tobytes() == kafka_scores.tobytes()


def test_requests_are_counted_by_model_version_and_status(served: Served) -> None:
    client = served.triton()
    client.infer("fraud", [matrix_input(ROWS[:2])])
    with pytest.raises(InferenceServerException):
        client.infer("fraud", [matrix_input(ROWS[:2, :4])])
    deadline = time.monotonic() + 10
    while True:
        samples = served.worker.metrics()
        ok = samples.get('streamer_oip_requests_total{model="fraud",status="200",version="1"}', 0)
        bad = samples.get('streamer_oip_requests_total{model="fraud",status="400",version=""}', 0)
        if (ok >= 1 and bad >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ok >= 1 and bad >= 1
    assert samples['streamer_oip_request_duration_seconds_count{model="fraud"}'] >= 2
    assert samples["streamer_oip_batch_size_requests_count"] >= 1
    # the OIP server lives on its own port: the worker's /metrics port does not answer /v2
    metrics_url = re.search(r"metrics: (http://\S+)/metrics", served.worker.log())
    assert metrics_url
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(metrics_url.group(1) + "/v2/health/live", timeout=5)
