"""Canary and shadow through a running worker, changed by commands through the control channel (both engines).

Version 2 (a different model) is put on a canary of 30 % of keys by ``streamer models canary``: each key is
served by one version only, the share is within tolerance, and each score is right for its stamped version.
Then ``models shadow``: the champion answers every request, the challenger's predictions go to the shadow topic
only (same keys, same source headers). Then ``models promote``: version 2 answers everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.core.routing import key_fraction
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all
from tests.e2e.test_model_lifecycle import scores_of, wait_for
from tests.model_versions import GBDT, LOGISTIC, write_version


def command(args: list[str], env: dict[str, str]) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | env
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args], env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def requests(count: int, seed: int, keys: int) -> tuple[list, np.ndarray]:
    rows = synthetic.transactions(count, seed=seed)
    messages = [
        (
            f"cust-{i % keys}".encode(),
            json.dumps({"id": f"{seed}-{i}", "features": synthetic.features_of(rows[i])}).encode(),
            None,
        )
        for i in range(count)
    ]
    return messages, rows


def test_canary_shadow_and_promotion_by_command(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    t = topics(partitions=4)
    shadow_topic, events_topic = unique_name("shadow"), unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([shadow_topic, events_topic], 4)
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    write_version(models, "fraud", 2, LOGISTIC)
    prefix = unique_name("ctl")
    env = {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_SHADOW_TOPIC": shadow_topic,
        "STREAMER_MODEL_EVENTS_TOPIC": events_topic,
        **t.env(),
    }
    config = f'[redis]\nkey_prefix = "{prefix}"\n[models]\ncontrol_interval_s = 0.5\n'
    (tmp_path / "streamer.toml").write_text(config)
    env["STREAMER_CONFIG"] = str(tmp_path / "streamer.toml")
    command(["models", "pin", "fraud", "1"], env)
    worker = worker_factory(t, config, **{k: v for k, v in env.items() if k != "STREAMER_CONFIG"})
    worker.wait_assigned()
    expected = {1: GBDT / "model.onnx", 2: LOGISTIC / "model.onnx"}

    def share_of(version: int, role: str = "canary") -> float:
        return worker.metrics().get(
            f'streamer_model_traffic_share{{model="fraud",role="{role}",version="{version}"}}', 0
        )

    # 1. canary: 30 % of keys, sticky
    command(["models", "canary", "fraud", "2", "--weight", "0.3"], env)
    wait_for(lambda: abs(share_of(2) - 0.3) < 1e-9, 15, "the canary reaches the worker")
    messages, rows = requests(1500, seed=5, keys=300)
    produce(kafka_broker.address, t.requests, messages)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))
    assert len(outputs) == len(messages)
    by_key: dict[bytes, set[int]] = defaultdict(set)
    scores = {v: scores_of(path, rows) for v, path in expected.items()}
    for output in outputs:
        body = json.loads(output.value())
        version, index = int(body["version"]), int(body["id"].split("-")[1])
        assert abs(body["score"] - scores[version][index]) < 1e-6
        by_key[output.key()].add(version)
    assert all(len(v) == 1 for v in by_key.values()), "a key is served by one version"
    canary_keys = [k for k, v in by_key.items() if v == {2}]
    assert abs(len(canary_keys) / len(by_key) - 0.3) < 0.08, len(canary_keys)
    assert all(key_fraction("fraud", k) < 0.3 for k in canary_keys), "the canary takes the lowest hash range"

    # 2. shadow: the champion answers, the challenger writes to the shadow topic only
    command(["models", "shadow", "fraud", "2"], env)
    shadow_share = 'streamer_model_shadow_share{model="fraud",version="2"}'
    wait_for(lambda: worker.metrics().get(shadow_share, 0) == 1, 15, "the shadow reaches the worker")
    messages, rows = requests(800, seed=6, keys=100)
    produce(kafka_broker.address, t.requests, messages)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], 1500 + 800)
    fresh = [json.loads(m.value()) for m in outputs if json.loads(m.value())["id"].startswith("6-")]
    assert len(fresh) == 800 and {p["version"] for p in fresh} == {"1"}
    shadow = read_all(kafka_broker.address, [shadow_topic], 800)
    assert len(shadow) == 800
    scores = scores_of(expected[2], rows)
    for message in shadow:
        body = json.loads(message.value())
        assert body["version"] == "2" and message.key() == f"cust-{int(body['id'].split('-')[1]) % 100}".encode()
        assert abs(body["score"] - scores[int(body["id"].split("-")[1])]) < 1e-6
        assert headers_of(message)["streamer-source-topic"] == t.requests.encode()

    # 3. promote: version 2 answers every key
    command(["models", "promote", "fraud", "2"], env)
    wait_for(lambda: share_of(2, "champion") == 1, 15, "the promotion reaches the worker")
    messages, _ = requests(300, seed=7, keys=50)
    produce(kafka_broker.address, t.requests, messages)
    outputs = read_all(kafka_broker.address, [t.predictions], 1500 + 800 + 300)
    assert {json.loads(m.value())["version"] for m in outputs if json.loads(m.value())["id"].startswith("7-")} == {"2"}
    serving = json.loads(command(["models", "serving", "--json"], env))
    assert serving["fraud"]["pin"] == 2 and serving["fraud"]["previous"] == 1
    events = [json.loads(m.value()) for m in read_all(kafka_broker.address, [events_topic], 4, timeout_s=10)]
    assert [e["type"] for e in events if e.get("by") == "command"] == [
        "model-pinned",
        "model-canary",
        "model-shadow",
        "model-promoted",
    ]
    assert worker.terminate() == 0
