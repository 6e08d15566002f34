"""The shipped fraud graph through a running worker (both engines), against ``streamer batch`` on the same
records, with entity features in a redis-server that is then frozen and stopped.

Accounts acct-000000..acct-000099 are in Redis (one flagged, one with chargebacks); keys from acct-000100 on
are not (their rows get the defaults, count as misses and say ``"enrichment": "missing"``); acct-000013 is on
the deny list. Every request is answered with the graph's prediction (stage outputs, decision, reasons, where its
entity features came from); ``streamer batch --from-topic`` gives byte-for-byte the same decisions and the same
scores (1e-6) from the same records. Then Redis is frozen (``SIGSTOP``: lookups time out) and later stopped:
the worker keeps answering, every row says ``"enrichment": "failed"``, and each graph does what its enrich
stage's ``on_failure`` says -- the shipped graph and its copy with none declared decide ``review`` (the default
with rules), the ``dead-letter`` copy writes ``enrichment-failed`` dead letters, the ``defaults`` copy decides on
the defaults (the flagged account is no longer known) -- counted per row and policy; between the two, answers
read the store again once Redis thaws.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import redis

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.redis_entities import EntityFeatureStore
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, produce, read_all
from tests.integration.test_enrichment_failures import FLAGGED_REASON, POLICIES, REVIEW_REASON, policy_graphs

SLOW_REDIS_OK = "timeout_ms = 1000\n"  # a busy machine must not fail a lookup while Redis is up


def graph_repository(tmp_path: Path) -> Path:
    """The example models and graphs, the fraud graph's lookups allowed 1 s, and its ``POLICIES`` copies."""
    models = tmp_path / "models"
    for name in ("fraud-online", "fraud-forest", "fraud-derived"):
        shutil.copytree(REPO / "examples" / "models" / name, models / name)
    shutil.copytree(REPO / "models" / "fraud", models / "fraud")
    shutil.copytree(REPO / "examples" / "graphs", tmp_path / "graphs")
    shipped = tmp_path / "graphs" / "fraud-graph.toml"
    features = "features = { chargebacks_90d = 0.0, flagged = 0.0 }\n"
    shipped.write_text(shipped.read_text().replace(features, features + SLOW_REDIS_OK))
    policy_graphs(tmp_path / "graphs")
    return models


def requests(count: int, seed: int, model: str = "fraud-graph") -> list[tuple[bytes, bytes, None]]:
    x = synthetic.transactions(count, seed=seed)
    x[::50, 0] = 2500.0  # some amounts over the limit
    return [
        (
            f"acct-{i % 150:06d}".encode(),
            json.dumps(
                {"id": f"{model}-g{seed}-{i}", "model": model, "features": synthetic.features_of(x[i])}
            ).encode(),
            None,
        )
        for i in range(count)
    ]


def test_the_fraud_graph_online_equals_offline_and_each_on_failure_holds_with_redis_frozen_and_stopped(
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
        assert prediction["enrichment"] == ("store" if int(key[5:]) < 100 else "missing"), prediction
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
        assert twin["enrichment"] == prediction["enrichment"]
        assert abs(twin["score"] - prediction["score"]) < 1e-6

    # Redis frozen: every lookup times out (or the breaker skips it); each policy copy does what it declares
    bootstrap = kafka_broker.address
    os.kill(server.pid, signal.SIGSTOP)
    try:
        frozen = policy_phase(bootstrap, t, seed=3, before=600)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    check_policies(frozen)

    # thawed: the breaker tries again within a second, and answers read the store again
    total = 600 + 3 * 60
    deadline = time.monotonic() + 60
    while True:
        probe = requests(1, seed=100 + total, model="fg-review")  # acct-000000: in Redis
        produce(bootstrap, t.requests, probe)
        total += 1
        answer = outputs(read_all(bootstrap, [t.predictions, t.dlq], total), t.dlq)[json.loads(probe[0][1])["id"]]
        if answer.get("enrichment") == "store":
            break
        assert answer.get("enrichment") == "failed" and time.monotonic() < deadline, answer

    # Redis stopped: connections refused; the shipped graph (on_failure not declared: review) and the copies
    devstack.stop_server(server)
    later = requests(200, seed=2)
    produce(bootstrap, t.requests, later)
    stopped = policy_phase(bootstrap, t, seed=4, before=total + 200)
    check_policies(stopped)
    everything = outputs(read_all(bootstrap, [t.predictions, t.dlq], total + 200 + 3 * 60), t.dlq)
    fresh = [everything[json.loads(v)["id"]] for _, v, _ in later]
    assert len(fresh) == 200 and all(p["enrichment"] == "failed" for p in fresh)
    assert all((p["decision"], p["reasons"]) == ("review", [REVIEW_REASON]) for p in fresh)
    assert np.isfinite([p["score"] for p in fresh]).all()

    # every failed row counted once, by graph and by what on_failure made of it
    failed = dict.fromkeys(["fraud-graph", *POLICIES], 0)
    for answer in everything.values():
        graph = answer["model"]
        if graph in failed and (answer.get("enrichment") == "failed" or answer.get("error") == "enrichment-failed"):
            failed[graph] += 1
    assert failed["fg-dead"] == 120 and failed["fraud-graph"] == 200 and failed["fg-open"] == 120
    policy = {"fraud-graph": "review", "fg-review": "review", "fg-dead": "dead-letter", "fg-open": "defaults"}
    metrics = worker.metrics()
    for graph, count in failed.items():
        name = f'streamer_enrichment_failed_rows_total{{graph="{graph}",on_failure="{policy[graph]}",stage="account"}}'
        assert metrics[name] == count, (name, metrics[name], count)
    assert metrics['streamer_dead_letters_total{reason="enrichment-failed"}'] == 120
    schema = json.loads((REPO / "schemas" / "prediction.schema.json").read_text())
    for answer in everything.values():  # the worker's bytes, "enrichment" included, match the declaration
        if "error" not in answer:
            jsonschema.validate(answer, schema)
    assert metrics['streamer_enrichment_failures_total{graph="fraud-graph",stage="account"}'] >= 1
    assert worker.process.poll() is None
    assert worker.terminate() == 0


def outputs(messages: list, dlq: str) -> dict[str, dict]:
    """Predictions by id, and dead letters by id as ``{"model", "error"}`` (the request's model and the reason)."""
    found: dict[str, dict] = {}
    for message in messages:
        value = json.loads(message.value())
        if message.topic() == dlq:
            reason = dict(message.headers() or [])["streamer-error"].decode()
            value = {"id": value["id"], "model": value["model"], "error": reason}
        found[value["id"]] = value
    return found


def policy_phase(bootstrap: str, t: Topics, seed: int, before: int) -> dict[str, list[dict]]:
    """60 requests to each copy of ``POLICIES`` (keys acct-000000..59: all of them keyed), then their outputs by
    graph; ``before``: how many outputs the topics held already."""
    sent = [r for graph in POLICIES for r in requests(60, seed, graph)]
    produce(bootstrap, t.requests, sent)
    answers = outputs(read_all(bootstrap, [t.predictions, t.dlq], before + len(sent)), t.dlq)
    by_graph: dict[str, list[dict]] = {graph: [] for graph in POLICIES}
    for _, value, _ in sent:
        request = json.loads(value)
        by_graph[request["model"]].append(answers[request["id"]])
    return by_graph


def check_policies(by_graph: dict[str, list[dict]]) -> None:
    """Redis not answering: every row of each copy as its on_failure says."""
    assert all(len(answers) == 60 for answers in by_graph.values())
    assert all(a["error"] == "enrichment-failed" for a in by_graph["fg-dead"])
    for graph in ("fg-review", "fg-open"):
        assert all(a["enrichment"] == "failed" and "decision" in a for a in by_graph[graph]), graph
    assert all((a["decision"], a["reasons"]) == ("review", [REVIEW_REASON]) for a in by_graph["fg-review"])
    flagged = by_graph["fg-open"][7]  # acct-000007: flagged in Redis, unknown now: decided on the defaults
    assert flagged["reasons"] not in ([FLAGGED_REASON], [REVIEW_REASON])
