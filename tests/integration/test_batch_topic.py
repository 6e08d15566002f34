"""`streamer batch --from-topic` against the real embedded broker: offset and time ranges, partitions, a topic
as output, and the same scores as a real worker gives for the same requests (CSV, Parquet and the topic)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streamer import synthetic
from streamer.adapters import devstack, model_repository
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, topics, worker_factory  # noqa: F401 (fixtures)

BASE_MS = 1_700_000_000_000


@pytest.fixture
def engine() -> str:
    """The e2e fixtures' worker, with the batch engine only (both engines run the same scoring code)."""
    return "batch"


def run_batch(cwd: Path, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | {
        "STREAMER_MODELS_DIR": str(REPO / "models"),
        "STREAMER_KAFKA_BOOTSTRAP": bootstrap,
    }
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", "batch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def requests(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs; every tenth value is broken in a different way."""
    rows = synthetic.transactions(count, seed=seed)
    out = []
    for i, row in enumerate(rows):
        value = json.dumps({"id": f"q-{seed}-{i}", "features": synthetic.features_of(row)}).encode()
        if i % 10 == 9:
            value = [b"not json", b'{"features": {"amount": "x"}}', b'{"model": "nope", "features": {}}'][i % 3]
        out.append((f"card-{i % 7}".encode(), value))
    return out


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], partitions: int) -> None:
    """Message i goes to partition i % partitions with timestamp BASE_MS + i seconds."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, value, key, partition=i % partitions, timestamp=BASE_MS + i * 1000)
    assert producer.flush(30) == 0


def worker_view(messages: list[tuple[bytes, bytes]], topic: str, partitions: int) -> dict[tuple[int, int], Any]:
    """(partition, offset) -> ("prediction", body) or ("error", reason), from the worker's scoring function."""
    scan = model_repository.scan(REPO / "models")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    catalog, infer = Catalog(cards), OnnxScorer(scan.loaded).infer
    out: dict[tuple[int, int], Any] = {}
    for p in range(partitions):
        mine = messages[p::partitions]
        records = Records.of(topic, p, list(range(len(mine))), [v for _, v in mine], [k for k, _ in mine])
        scored = score_records(records, catalog, infer)
        for offset, body in enumerate(scored.bodies):
            out[(p, offset)] = (
                ("prediction", json.loads(body + b"}")) if body is not None else ("error", scored.errors[offset].reason)
            )
    return out


def test_a_topic_range_is_rescored_like_the_worker_scores_it(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("rescore", partitions=2)
    messages = requests(400, seed=3)
    produce(kafka_broker.address, topic, messages, 2)
    expected = worker_view(messages, topic, 2)
    started = time.monotonic()
    result = run_batch(tmp_path, kafka_broker.address, "--from-topic", topic, "--to-offset", "200", "-o", "p.jsonl")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30  # ends at --to-offset, not after an idle wait
    predictions = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "p.jsonl.rejects.jsonl").read_text().splitlines()]
    assert len(predictions) + len(rejects) == 400
    assert "400 rows: 360 predictions, 40 dead letters (invalid-json 14, schema 13, unknown-model 13)" in result.stderr
    for p in predictions:
        source = p["source"]
        assert source["topic"] == topic
        kind, body = expected[(source["partition"], source["offset"])]
        assert kind == "prediction"
        assert (p["id"], p["model"], p["version"], p["label"]) == (
            body["id"],
            body["model"],
            body["version"],
            body["label"],
        )
        assert p["score"] == pytest.approx(body["score"], abs=1e-6)
    for p in range(2):  # per partition in offset order
        offsets = [x["source"]["offset"] for x in predictions if x["source"]["partition"] == p]
        assert offsets == sorted(offsets)
    for r in rejects:
        assert expected[(r["partition"], r["offset"])] == ("error", r["error"])
        assert r["key"].startswith("card-")
        assert r["original"] == messages[r["offset"] * 2 + r["partition"]][1].decode()


def test_partition_offsets_and_times_bound_the_range(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("range", partitions=2)
    messages = requests(100, seed=4)
    produce(kafka_broker.address, topic, messages, 2)
    # partition 1, offsets [10, 20): messages 21, 23, ..., 39
    result = run_batch(
        tmp_path,
        kafka_broker.address,
        *("--from-topic", topic, "--partition", "1", "--from-offset", "10", "--to-offset", "20"),
        *("-o", "p.csv", "--rejects", "r.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    out = pcsv.read_csv(tmp_path / "p.csv").to_pylist()
    rejects = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted([(r["partition"], r["offset"]) for r in out] + [(r["partition"], r["offset"]) for r in rejects]) == [
        (1, o) for o in range(10, 20)
    ]
    assert [r["id"] for r in out] == [f"q-4-{2 * o + 1}" for o in range(10, 20) if (2 * o + 1) % 10 != 9]
    # times: [BASE + 30 s, BASE + 50 s) is messages 30..49 (the embedded broker answers the lookup with offset
    # 0, so this also checks the filtering); ISO-8601 and milliseconds both work
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((BASE_MS + 30_000) / 1000))
    result = run_batch(
        tmp_path,
        kafka_broker.address,
        *("--from-topic", topic, "--from-time", start, "--to-time", str(BASE_MS + 50_000), "--idle-ms", "500"),
        *("-o", "t.jsonl", "--quiet"),
    )
    assert result.returncode == 0, result.stderr
    answered = [json.loads(line)["id"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert sorted(answered) == sorted(f"q-4-{i}" for i in range(30, 50) if i % 10 != 9)


def test_without_an_end_offset_the_range_ends_when_the_topic_is_idle(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("idle", partitions=3)
    messages = requests(90, seed=5)
    produce(kafka_broker.address, topic, messages, 3)
    result = run_batch(tmp_path, kafka_broker.address, "--from-topic", topic, "--idle-ms", "1000", "-o", "p.parquet")
    assert result.returncode == 0, result.stderr
    assert "90 rows: 81 predictions, 9 dead letters" in result.stderr
    table = pq.read_table(tmp_path / "p.parquet")
    names = ["id", "model", "version", "score", "label", "outputs", "decision", "reasons", "enrichment"]
    assert table.schema.names == [*names, "partition", "offset"]
    missing = run_batch(tmp_path, kafka_broker.address, "--from-topic", "no-such-topic-here")
    assert missing.returncode == 2 and "no topic named 'no-such-topic-here'" in missing.stderr


def consume_all(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{time.time_ns()}", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(seen) < count and time.monotonic() < deadline:
        seen += [m for m in consumer.consume(500, 0.2) if m.error() is None]
    consumer.close()
    return seen


def test_predictions_can_go_to_a_topic_keyed_and_partitioned_like_their_requests(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    source, target = topic_factory("src", partitions=2), topic_factory("dst", partitions=2)
    messages = requests(60, seed=6)
    produce(kafka_broker.address, source, messages, 2)
    result = run_batch(
        tmp_path, kafka_broker.address, "--from-topic", source, "--to-offset", "30", "--to-topic", target
    )
    assert result.returncode == 0, result.stderr
    assert "60 rows: 54 predictions, 6 dead letters" in result.stderr
    assert '"error": "invalid-json"' in result.stderr  # rejects go to stderr when predictions go to a topic
    out = consume_all(kafka_broker.address, target, 54)
    assert len(out) == 54
    for message in out:
        body = json.loads(message.value())
        headers = dict(message.headers())
        partition, offset = int(headers["streamer-source-partition"]), int(headers["streamer-source-offset"])
        assert message.partition() == partition == body["source"]["partition"]
        assert headers["streamer-source-topic"].decode() == source
        assert message.key() == messages[offset * 2 + partition][0]
        assert body["latency_ms"] > 0  # from the request's (old) timestamp, as the worker measures it


def test_batch_scores_equal_a_real_workers_for_the_same_rows_in_every_input(
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],  # noqa: F811
    worker_factory: Callable[..., WorkerProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    t = topics(partitions=2)
    rows = synthetic.transactions(500, seed=8)
    ids = [f"w-{i}" for i in range(len(rows))]
    values = [json.dumps({"id": ids[i], "features": synthetic.features_of(r)}).encode() for i, r in enumerate(rows)]
    produce(kafka_broker.address, t.requests, [(i.encode(), v) for i, v in zip(ids, values, strict=True)], 2)
    worker = worker_factory(t)
    worker.wait_assigned()
    served = {}
    for message in consume_all(kafka_broker.address, t.predictions, len(rows), timeout_s=60):
        body = json.loads(message.value())
        served[body["id"]] = body["score"]
    assert len(served) == len(rows)
    columns = {"id": ids, **{name: rows[:, i] for i, name in enumerate(synthetic.FEATURES)}}
    pcsv.write_csv(pa.table(columns), tmp_path / "in.csv")
    pq.write_table(pa.table(columns), tmp_path / "in.parquet")
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(values) + b"\n")
    inputs = [["in.csv"], ["in.parquet"], ["in.jsonl"], ["--from-topic", t.requests, "--to-offset", "250"]]
    for args in inputs:
        result = run_batch(tmp_path, kafka_broker.address, *args, "-o", "out.parquet", "--quiet")
        assert result.returncode == 0, result.stderr
        out = pq.read_table(tmp_path / "out.parquet").to_pydict()
        assert sorted(out["id"]) == sorted(ids), args
        got = np.array(out["score"])
        want = np.array([served[i] for i in out["id"]])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(args))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_can_be_scored_into_a_topic(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], tmp_path: Path, fmt: str
) -> None:
    target = topic_factory("from-file", partitions=3)
    rows = synthetic.transactions(50, seed=9)
    if fmt == "jsonl":
        lines = [json.dumps({"id": f"f-{i}", "features": synthetic.features_of(r)}) for i, r in enumerate(rows)]
        (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    else:
        columns = {
            "id": [f"f-{i}" for i in range(len(rows))],
            **{n: rows[:, i] for i, n in enumerate(synthetic.FEATURES)},
        }
        pcsv.write_csv(pa.table(columns), tmp_path / "in.csv")
    result = run_batch(tmp_path, kafka_broker.address, f"in.{fmt}", "--to-topic", target)
    assert result.returncode == 0, result.stderr
    out = consume_all(kafka_broker.address, target, 50)
    bodies = [json.loads(m.value()) for m in out]
    assert sorted(b["id"] for b in bodies) == sorted(f"f-{i}" for i in range(50))
    assert {b["source"]["topic"] for b in bodies} == {f"file:in.{fmt}"}
    assert all(0 <= b["latency_ms"] < 60_000 for b in bodies)  # from when the row was read
    assert {dict(m.headers())["streamer-source-topic"].decode() for m in out} == {f"file:in.{fmt}"}
