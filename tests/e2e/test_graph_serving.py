"""The shipped fraud graph through a running worker (both engines), against ``streamer batch`` on the same
records, with entity features in a redis-server that is then stopped.

Accounts acct-000000..acct-000099 are in Redis (one flagged, one with chargebacks); keys from acct-000100 on
are not (their rows get the defaults and count as misses); acct-000013 is on the deny list. Every request is
answered with the graph's prediction (stage outputs, decision, reasons); ``streamer batch --from-topic`` gives
byte-for-byte the same decisions and the same scores (1e-6) from the same records. Then Redis is stopped: the
worker keeps answering, every row with the defaults, and counts the failed lookups.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.redis_entities import EntityFeatureStore
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.e2e.test_model_lifecycle import wait_for


def graph_repository(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for name in ("fraud-online", "fraud-forest", "fraud-derived"):
        shutil.copytree(REPO / "examples" / "models" / name, models / name)
    shutil.copytree(REPO / "models" / "fraud", models / "fraud")
    shutil.copytree(REPO / "examples" / "graphs", tmp_path / "graphs")
    return models


def requests(count: int, seed: int) -> list[tuple[bytes, bytes, None]]:
    x = synthetic.transactions(count, seed=seed)
    x[::50, 0] = 2500.0  # some amounts over the limit
    return [
        (
            f"acct-{i % 150:06d}".encode(),
            json.dumps(
                {"id": f"g{seed}-{i}", "model": "fraud-graph", "features": synthetic.features_of(x[i])}
            ).encode(),
            None,
        )
        for i in range(count)
    ]


def test_the_fraud_graph_online_equals_offline_and_survives_redis_stopping(
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    server = devstack.start_redis(tmp_path / "redis", die_with_parent=True)
    client = redis.Redis.from_url(server.address)
    accounts = [(f"acct-{k:06d}".encode(), {"chargebacks_90d": 0.0, "flagged": 0.0}) for k in range(100)]
    accounts[7] = (b"acct-000007", {"chargebacks_90d": 0.0, "flagged": 1.0})
    accounts[8] = (b"acct-000008", {"chargebacks_90d": 5.0, "flagged": 0.0})
    EntityFeatureStore(client).put("account", accounts)
    models = graph_repository(tmp_path)
    t = topics(partitions=4)
    env = {"STREAMER_REDIS_URL": server.address, "STREAMER_MODELS_DIR": str(models)}
    worker = worker_factory(t, None, **env)
    worker.wait_assigned()
    sent = requests(600, seed=1)
    produce(kafka_broker.address, t.requests, sent)
    online = {
        json.loads(m.value())["id"]: json.loads(m.value())
        for m in read_all(kafka_broker.address, [t.predictions, t.dlq], 600)
    }
    assert len(online) == 600 and all(p["model"] == "fraud-graph" for p in online.values())

    by_key = {json.loads(v)["id"]: k for k, v, _ in sent}
    for pid, prediction in online.items():
        key = by_key[pid]
        assert set(prediction["outputs"]) == {"phases", "phases.path", "phases.model"}
        assert prediction["score"] == prediction["outputs"]["phases"]
        assert prediction["outputs"]["phases.model"] == (
            "fraud-online@1" if prediction["outputs"]["phases.path"] == "first" else "fraud@1"
        )
        if key == b"acct-000013":
            assert (prediction["decision"], prediction["reasons"]) == ("deny", ["account on the deny list"])
        elif key == b"acct-000007":
            assert prediction["decision"] == "deny" and prediction["reasons"] == ["account flagged by investigations"]
        elif prediction["score"] < 0.2 and key == b"acct-000008":
            assert prediction["reasons"] == ["three or more chargebacks in 90 days"]
    decisions = {p["decision"] for p in online.values()}
    assert decisions == {"allow", "review", "deny"}, decisions
    paths = [p["outputs"]["phases.path"] for p in online.values()]
    assert 0 < paths.count("then") < len(paths) / 2, "the GBDT scores the unsure rows only"
    metrics = worker.metrics()
    assert metrics['streamer_enrichment_misses_total{graph="fraud-graph",stage="account"}'] == 600 * 50 / 150
    assert metrics['streamer_graph_stage_rows_total{graph="fraud-graph",stage="phases/then"}'] == paths.count("then")

    # offline: the same records through `streamer batch --from-topic`, the same graph, the same Redis
    out = tmp_path / "offline.jsonl"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    environ |= env | {"STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer.cli",
            "batch",
            "--from-topic",
            t.requests,
            "--idle-ms",
            "1500",
            "-o",
            str(out),
            "--quiet",
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    offline = {p["id"]: p for p in map(json.loads, out.read_text().splitlines())}
    assert set(offline) == set(online)
    for pid, prediction in online.items():
        twin = offline[pid]
        assert (twin["decision"], twin["reasons"], twin["label"]) == (
            prediction["decision"],
            prediction["reasons"],
            prediction["label"],
        )
        assert twin["outputs"]["phases.path"] == prediction["outputs"]["phases.path"]
        assert abs(twin["score"] - prediction["score"]) < 1e-6

    # Redis stopped: answers go on with the defaults (the flagged account is no longer known), failures counted
    devstack.stop_server(server)
    later = requests(200, seed=2)
    produce(kafka_broker.address, t.requests, later)
    after = [json.loads(m.value()) for m in read_all(kafka_broker.address, [t.predictions, t.dlq], 800)]
    fresh = [p for p in after if p["id"].startswith("g2-")]
    assert len(fresh) == 200 and all("decision" in p for p in fresh)
    flagged = [p for p in fresh if int(p["id"].split("-")[1]) % 150 == 7]  # acct-000007: flagged, unknown now
    assert flagged and all(p["reasons"] != ["account flagged by investigations"] for p in flagged)
    wait_for(
        lambda: worker.metrics().get('streamer_enrichment_failures_total{graph="fraud-graph",stage="account"}', 0) >= 1,
        10,
        "failed lookups counted",
    )
    assert worker.process.poll() is None
    assert worker.terminate() == 0
    assert np.isfinite([p["score"] for p in fresh]).all()
