"""``streamer serve`` (no Kafka) checked with Triton's HTTP client: health, readiness, model metadata, inference
of one row and of 1,000, the protocol's errors, version routing, batching of concurrent requests and the
metrics. One server for the module, over a copy of the shipped model as versions 1 and 2 (pinned to 1), and
the example fraud graph (two-phase scoring, then business rules: a ``decision`` per row).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from streamer import synthetic
from tests.conftest import REPO, ServeProcess

ROWS = synthetic.transactions(1000, seed=61).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "2")
    card = models / "fraud" / "2" / "card.toml"
    card.write_text(card.read_text().replace("version = 1", "version = 2", 1))
    shutil.copytree(REPO / "examples" / "models" / "fraud-online", models / "fraud-online")
    (root / "graphs").mkdir()  # beside models/: read at start
    shutil.copy(REPO / "examples" / "graphs" / "fraud-graph.toml", root / "graphs")
    (root / "streamer.toml").write_text("[models]\npins = { fraud = 1 }\n")
    environ = {
        "PATH": "/usr/bin:/bin",
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_BATCH_MAX_WAIT_MS": "2",
        # the package under test, when it is not the installed one (a checkout put first on the path)
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},
    }
    environ |= {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}  # the checkout under test
    serving = ServeProcess(root, environ, start_timeout_s=30)
    try:
        yield serving.address
    finally:
        assert serving.stop(10) == 0, serving.log()[-3000:]


def matrix_input(rows: np.ndarray, name: str = "float_input", binary: bool = False) -> triton.InferInput:
    tensor = triton.InferInput(name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def test_health_readiness_and_metadata(server: str) -> None:
    client = triton.InferenceServerClient(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("fraud", "2")
    assert not client.is_model_ready("fraud", "3") and not client.is_model_ready("nope")
    metadata = client.get_model_metadata("fraud")
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == ("fraud", ["1", "2"], "onnxruntime_onnx")
    assert metadata["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 6]}]
    assert metadata["outputs"][-2:] == [
        {"name": "score", "datatype": "FP64", "shape": [-1]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]} in metadata["outputs"]
    assert metadata["parameters"]["serving_version"] == "1"  # the pin
    assert client.get_model_metadata("fraud", "2")["versions"] == ["2"]
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "404"


def test_one_row_and_a_thousand(server: str) -> None:
    client = triton.InferenceServerClient(server)
    one = client.infer("fraud", [matrix_input(ROWS[:1])], request_id="q1")
    response = one.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("fraud", "1", "q1")
    assert response["parameters"] == {"id": "q1", "model": "fraud", "version": "1"}
    assert one.as_numpy("probabilities")[0, 1] == np.float32(one.as_numpy("score")[0])
    thousand = client.infer("fraud", [matrix_input(ROWS, binary=True)])  # tritonclient's default encoding
    assert thousand.as_numpy("score").shape == (1000,)
    assert thousand.as_numpy("score")[0] == one.as_numpy("score")[0]
    second = client.infer("fraud", [matrix_input(ROWS[:5])], model_version="2")
    assert second.get_response()["model_version"] == "2"
    assert second.as_numpy("score").tobytes() == thousand.as_numpy("score")[:5].tobytes()  # the same file
    only = client.infer("fraud", [matrix_input(ROWS[:3])], outputs=[triton.InferRequestedOutput("score", False)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["score"]


@pytest.mark.parametrize(
    ("model", "rows", "name", "status", "message"),
    [
        (
            "fraud",
            ROWS[:2, :5],
            "float_input",
            "400",
            "schema: input 'float_input' has 5 columns; model fraud@1 takes 6",
        ),
        ("fraud", ROWS[:2], "x", "400", "schema: input 'x' is neither the model's input 'float_input' nor one of"),
        ("nope", ROWS[:1], "float_input", "404", "unknown-model: no model named 'nope'"),
    ],
)
def test_protocol_errors(server: str, model: str, rows: np.ndarray, name: str, status: str, message: str) -> None:
    with pytest.raises(InferenceServerException) as raised:
        triton.InferenceServerClient(server).infer(model, [matrix_input(rows, name)])
    assert raised.value.status() == status
    assert raised.value.message().startswith(message)


def test_a_request_over_the_row_limit_is_a_413_too_large(server: str) -> None:
    """The status of a refused request is its dead-letter reason's (one table): too-large is 413."""
    rows = np.tile(ROWS, (11, 1))  # 11,000 rows, over worker.max_rows_per_request; binary: the body is read whole
    with pytest.raises(InferenceServerException) as raised:
        triton.InferenceServerClient(server).infer("fraud", [matrix_input(rows, binary=True)])
    assert raised.value.message().startswith("too-large: "), raised.value.message()
    assert raised.value.status() == "413"
    assert raised.value.message().startswith("too-large: ")


def test_a_body_that_is_not_json_is_a_400_with_the_dead_letter_reason(server: str) -> None:
    request = urllib.request.Request(f"http://{server}/v2/models/fraud/infer", data=b"\xff{", method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    assert raised.value.code == 400
    assert json.loads(raised.value.read())["error"].startswith("invalid-json: ")


def metrics(server: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{server}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_concurrent_requests_share_batches_and_are_counted(server: str) -> None:
    triton.InferenceServerClient(server).infer("fraud", [matrix_input(ROWS[:1])], model_version="2")
    before = metrics(server)

    def one(i: int) -> float:
        client = triton.InferenceServerClient(server)
        return float(client.infer("fraud", [matrix_input(ROWS[i : i + 1])]).as_numpy("score")[0])

    with ThreadPoolExecutor(32) as pool:
        scores = list(pool.map(one, range(400)))
    whole = triton.InferenceServerClient(server).infer("fraud", [matrix_input(ROWS[:400])]).as_numpy("score")
    assert np.array(scores).tobytes() == whole.tobytes()  # batch-mates never change a row's answer
    after = metrics(server)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    requests, batches = delta("streamer_oip_batch_size_requests_sum"), delta("streamer_oip_batch_size_requests_count")
    assert requests == 401
    assert batches < requests, "no two concurrent requests were scored together"
    assert delta('streamer_oip_requests_total{model="fraud",status="200",version="1"}') == 401
    assert after['streamer_oip_requests_total{model="fraud",status="200",version="2"}'] >= 1
    assert 'streamer_oip_requests_total{model="fraud",status="400",version="2"}' in after  # starts at 0
    assert delta('streamer_oip_request_duration_seconds_count{model="fraud"}') == 401


def test_a_graph_with_rules_answers_its_decision_per_row(server: str) -> None:
    client = triton.InferenceServerClient(server)
    metadata = client.get_model_metadata("fraud-graph")
    features = metadata["parameters"]["features"].split(",")
    assert metadata["inputs"] == [{"name": f, "datatype": "FP32", "shape": [-1]} for f in features]
    assert [o["name"] for o in metadata["outputs"]] == ["score", "label", "decision", "reasons", "enrichment"]
    inputs = []
    for k, name in enumerate(features):
        tensor = triton.InferInput(name, [50], "FP32")
        tensor.set_data_from_numpy(ROWS[:50, k].copy())
        inputs.append(tensor)
    result = client.infer("fraud-graph", inputs)
    decisions = {str(d) for d in result.as_numpy("decision")}  # JSON BYTES come back as str
    assert decisions and decisions <= {"allow", "review", "deny"}
    reasons = [json.loads(r) for r in result.as_numpy("reasons")]
    assert len(reasons) == 50 and all(isinstance(r, list) and r for r in reasons)
    assert result.as_numpy("score").shape == (50,)
    assert {str(e) for e in result.as_numpy("enrichment")} == {"missing"}  # no parameters.key: no entity to read
    # with a key, but no Redis configured here: the lookup fails, and the default on_failure with rules is review
    keyed = client.infer("fraud-graph", inputs, parameters={"key": "acct-000001"})
    assert {str(e) for e in keyed.as_numpy("enrichment")} == {"failed"}
    assert {str(d) for d in keyed.as_numpy("decision")} == {"review"}
    reason = ["enrichment 'account' failed: the feature store did not answer"]
    assert [json.loads(r) for r in keyed.as_numpy("reasons")] == [reason] * 50


def test_metrics_page_is_served_beside_the_protocol(server: str) -> None:
    assert "streamer_model_info" in "".join(metrics(server))
