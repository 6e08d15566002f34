"""The keyed scoring path end to end: 8 partitions, thousands of requests over hundreds of keys.

Exactly one output per request (prediction or dead letter) as a read_committed consumer sees it, per-key and
per-partition request order, byte-identical keys, outputs on the request's partition number, and scores equal
to ONNX Runtime run directly on the model file -- also across kill -9 and SIGTERM with a restart.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest

from streamer import synthetic
from streamer.adapters import devstack
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all

MODEL = REPO / "models" / "fraud" / "1" / "model.onnx"


def make_requests(count: int, keys: int, seed: int) -> tuple[list[tuple[bytes | None, bytes, list | None]], np.ndarray]:
    rows = synthetic.transactions(count, seed=seed)
    rng = random.Random(seed)
    key_space: list[bytes | None] = [f"card-{i}".encode() for i in range(keys - 12)]
    key_space += [bytes([0xFF, 0x00, i, 0x80, 0xFE]) for i in range(10)]  # binary, not UTF-8
    key_space += [b"", None]
    messages = []
    for index in range(count):
        body = {"id": f"s{seed}-{index}", "features": synthetic.features_of(rows[index])}
        messages.append((rng.choice(key_space), json.dumps(body).encode(), None))
    return messages, rows


def expected_scores(rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"float_input": rows.astype(np.float32)})
    return probabilities[:, 1]


def check_exactly_once_in_order(topics: Topics, bootstrap: str, messages: list, outputs: list) -> dict[str, dict]:
    """The invariants every run must hold; returns the predictions by id."""
    requests = read_all(bootstrap, [topics.requests], len(messages), settle_s=0.2)
    assert len(requests) == len(messages)
    by_source = {(m.partition(), m.offset()): m for m in requests}
    seen: Counter[tuple[int, int]] = Counter()
    last_offset: dict[tuple[str, int], int] = defaultdict(lambda: -1)
    predictions: dict[str, dict] = {}
    for output in outputs:
        headers = headers_of(output)
        source = (int(headers["streamer-source-partition"]), int(headers["streamer-source-offset"]))
        seen[source] += 1
        request = by_source[source]
        assert output.partition() == request.partition()
        assert output.key() == request.key()
        assert source[1] > last_offset[(output.topic(), output.partition())], "outputs out of request order"
        last_offset[(output.topic(), output.partition())] = source[1]
        if output.topic() == topics.predictions:
            body = json.loads(output.value())
            assert body["source"] == {"topic": topics.requests, "partition": source[0], "offset": source[1]}
            predictions[body["id"]] = body
    duplicates = {s: n for s, n in seen.items() if n > 1}
    missing = set(by_source) - set(seen)
    assert not duplicates, f"{len(duplicates)} requests have several outputs, e.g. {list(duplicates.items())[:5]}"
    assert not missing, f"{len(missing)} requests have no output, e.g. {sorted(missing)[:5]}"
    # per key: outputs in the order of their requests, in each output topic. A non-empty key lives in one
    # partition; null and empty keys are spread by the producer's partitioner, so their order holds per partition.
    per_key: dict[tuple[str, bytes | None, int], list[int]] = defaultdict(list)
    for output in outputs:
        offset = int(headers_of(output)["streamer-source-offset"])
        per_key[(output.topic(), output.key(), output.partition())].append(offset)
    for (topic, key, partition), offsets in per_key.items():
        assert offsets == sorted(offsets), f"key {key!r} out of order in {topic}[{partition}]"
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for _, key, partition in per_key:
        if key:
            partitions_of_key[key].add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    return predictions


def test_thousands_of_keyed_requests_come_back_once_in_order_with_exact_scores(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(8)
    messages, rows = make_requests(3000, keys=300, seed=11)
    worker = worker_factory(t)
    worker.wait_assigned()
    produce(kafka_broker.address, t.requests, messages)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == len(messages)
    expected = expected_scores(rows)
    got = np.array([predictions[f"s11-{i}"]["score"] for i in range(len(messages))])
    # float32 sums over the trees may round differently with another batch size: 1e-6 absolute on probabilities
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    labels = np.array([predictions[f"s11-{i}"]["label"] for i in range(len(messages))])
    assert set(labels) <= {0, 1}
    sample = predictions["s11-0"]
    assert (sample["model"], sample["version"]) == ("fraud", "1")
    assert set(sample["outputs"]) == {"label", "probabilities"}
    assert sample["latency_ms"] >= 0


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_worker_stopped_mid_stream_and_restarted_loses_and_duplicates_nothing(
    stop: str,
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    t = topics(8)
    messages, _ = make_requests(4000, keys=200, seed=12)
    first = worker_factory(t)
    first.wait_assigned()
    # Stop while outputs are flowing -- requests still arriving and the worker past its first few hundred
    # answers, so that some outputs are in the log with their offsets not yet committed (commits go every
    # second). Waiting for the producer alone let a worker slow to start on a busy machine (its first
    # assignment settles the garbage collector) be killed before it had answered anything.
    feeding = threading.Thread(target=produce, args=(kafka_broker.address, t.requests, messages[:2000], 2000))
    feeding.start()
    deadline = time.monotonic() + 60
    while feeding.is_alive() or time.monotonic() < deadline:
        answered = sum(v for k, v in first.metrics().items() if k.startswith("streamer_requests_total"))
        if answered >= 300 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if stop == "kill -9":
        first.kill()
    else:
        assert first.terminate() == 0, first.log()[-3000:]
    feeding.join()
    produce(kafka_broker.address, t.requests, messages[2000:])
    second = worker_factory(t)
    second.wait_assigned()
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == len(messages)
    skipped = sum(v for k, v in second.metrics().items() if k.startswith("streamer_recovered_skipped_total"))
    print(f"{stop}: the restarted worker found {skipped:.0f} requests already answered and did not repeat them")
    if stop == "kill -9":
        # killed while outputs were flowing, some outputs were in the log but their offsets not yet committed:
        # the read-back is what kept them from being written twice
        assert skipped > 0


@pytest.mark.parametrize("engine", ["batch"])  # transactions are a batch-engine mode
def test_transactional_mode_is_exactly_once_across_kill_9_with_the_same_transactional_id(
    engine: str,
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
) -> None:
    t = topics(4)
    config = f'[kafka]\ntransactional = true\ntransactional_id = "{unique_name("txn")}"\n'
    messages, _ = make_requests(3000, keys=100, seed=13)
    first = worker_factory(t, config=config)
    first.wait_assigned()
    produce(kafka_broker.address, t.requests, messages[:1500], rate=2000)
    first.kill()  # leaves a transaction open: the restart with the same id closes it before reading back
    produce(kafka_broker.address, t.requests, messages[1500:])
    second = worker_factory(t, config=config)
    second.wait_assigned()
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))
    predictions = check_exactly_once_in_order(t, kafka_broker.address, messages, outputs)
    assert len(predictions) == len(messages)
    assert "transactional producer" in second.log()
