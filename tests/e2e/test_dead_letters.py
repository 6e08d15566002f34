"""Hostile and broken input: every reason lands in the dead-letter topic, byte for byte, and the worker lives."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all

GOOD = synthetic.features_of(synthetic.transactions(1, seed=3)[0])


def request(**fields: object) -> bytes:
    return json.dumps({"features": GOOD, **fields}).encode()


CASES: list[tuple[str, bytes | None, bytes | None, list | None, str | None]] = [
    # (name, key, value, headers, expected dead-letter reason or None for a prediction)
    ("good", b"k1", request(id="good"), None, None),
    ("not json", b"k2", b"\x00\xffnot json at all", None, "invalid-json"),
    ("truncated json", b"k3", request(id="t")[:-5], None, "invalid-json"),
    ("json array", b"k4", b"[1, 2, 3]", None, "schema"),
    ("feature wrong type", b"k5", json.dumps({"features": {**GOOD, "amount": "lots"}}).encode(), None, "schema"),
    ("feature missing", b"k6", json.dumps({"features": {"amount": 1.0}}).encode(), None, "schema"),
    ("tombstone", b"k7", None, None, "schema"),
    ("unknown model", b"k8", request(model="nope"), None, "unknown-model"),
    ("unknown version", b"k9", request(model="fraud@99"), None, "unknown-model"),
    ("unknown model header", b"k10", request(), [("streamer-model", b"nope"), ("trace-id", b"abc")], "unknown-model"),
    ("model header", b"k11", request(id="by-header"), [("streamer-model", b"fraud@1")], None),
    ("overflow", b"k12", json.dumps({"features": GOOD})[:-2].encode() + b', "amount": 1e999}}', None, "non-finite"),
    ("null feature", b"k13", json.dumps({"features": {**GOOD, "hour": None}}).encode(), None, "non-finite"),
    ("too large", b"k14", request(id="big", padding="x" * 5000), None, "too-large"),
    ("binary key", bytes(range(256)), b"{", None, "invalid-json"),
    # JSON text is UTF-8: invalid bytes anywhere are invalid-json, even in a string the model never reads
    (
        "bad utf-8 unread",
        b"k16",
        b'{"id": "u1", "note": "\xff\xfe", "features": ' + json.dumps(GOOD).encode() + b"}",
        None,
        "invalid-json",
    ),
    (
        "bad utf-8 id",
        b"k17",
        b'{"id": "\xc3\x28", "features": ' + json.dumps(GOOD).encode() + b"}",
        None,
        "invalid-json",
    ),
    ("bad utf-8 name", b"k18", b'{"features": {"\xffamount": 1}}', None, "invalid-json"),
    (
        "misnamed tensor",
        b"k19",
        json.dumps({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [0] * 6}]}).encode(),
        None,
        "schema",
    ),
    ("good after bad", b"k15", request(id="after"), None, None),
]


def test_every_bad_input_becomes_one_dead_letter_and_good_ones_still_score(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(4)
    worker = worker_factory(t, config="[worker]\nmax_message_bytes = 4096\n")
    worker.wait_assigned()
    messages = [(key, value, headers) for _, key, value, headers, _ in CASES]
    # Repeat the set so that bad rows share batches with good ones.
    produce(kafka_broker.address, t.requests, messages * 5)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages) * 5)
    assert len(outputs) == len(messages) * 5  # predictions + dead letters == requests
    requests = read_all(kafka_broker.address, [t.requests], len(messages) * 5, settle_s=0.2)
    by_source = {(m.partition(), m.offset()): m for m in requests}
    expected = {(key, value): reason for _, key, value, _, reason in CASES}
    for output in outputs:
        headers = headers_of(output)
        source = by_source[(int(headers["streamer-source-partition"]), int(headers["streamer-source-offset"]))]
        reason = expected[(source.key(), source.value())]
        assert output.key() == source.key()
        if reason is None:
            assert output.topic() == t.predictions
            assert json.loads(output.value())["model"] == "fraud"
            continue
        assert output.topic() == t.dlq, (reason, source.value()[:100], output.value()[:300])
        assert output.value() == source.value()  # the original bytes
        assert headers["streamer-error"].decode() == reason
        assert headers["streamer-error-detail"]
        assert headers["streamer-source-topic"].decode() == t.requests
        for name, value in source.headers() or []:  # the request's own headers travel along
            assert headers[name] == value
    counts = worker.metrics()
    assert counts['streamer_dead_letters_total{reason="invalid-json"}'] == 30
    assert counts['streamer_dead_letters_total{reason="unknown-model"}'] == 15
    assert worker.process.poll() is None  # alive


def test_an_oip_request_gets_one_prediction_with_a_score_per_row(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(2)
    worker = worker_factory(t)
    worker.wait_assigned()
    rows = synthetic.transactions(3, seed=5).astype(np.float32)
    oip = {
        "id": "oip-1",
        "inputs": [{"name": "float_input", "shape": [3, 6], "datatype": "FP32", "data": rows.tolist()}],
    }
    produce(kafka_broker.address, t.requests, [(b"batch-client", json.dumps(oip).encode(), None)])
    [output] = read_all(kafka_broker.address, [t.predictions, t.dlq], 1)
    body = json.loads(output.value())
    session = ort.InferenceSession(str(REPO / "models/fraud/1/model.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"float_input": rows})
    assert body["id"] == "oip-1"
    np.testing.assert_allclose(body["score"], probabilities[:, 1], rtol=1e-6, atol=1e-6)  # float32 rounding
    assert body["label"] == labels.tolist()
    assert len(body["outputs"]["probabilities"]) == 3


def test_the_worker_refuses_to_start_on_a_partition_mismatch(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], unique_name: Callable[[str], str], tmp_path
) -> None:
    t = topics(4)
    t.predictions = unique_name("pred2")
    KafkaAdmin(kafka_broker.address).create_topics([t.predictions], 2)
    env = {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_MODELS_DIR": str(REPO / "models"),
        "STREAMER_METRICS_PORT": "0",  # another worker on this host may hold the default port
        "PYTHONPATH": str(REPO),  # this checkout's code, whatever the environment's editable install points at
        **t.env(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "partition counts differ" in result.stderr and "Traceback" not in result.stderr
