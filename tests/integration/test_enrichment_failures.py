"""Enrichment failures in ``streamer batch`` and ``streamer serve``, against a real redis-server that is then
frozen (``SIGSTOP``: lookups time out) and stopped (connections refused).

Three copies of the shipped fraud graph differ only in their enrich stage's ``on_failure``: none declared
(``review``, the default in a graph with rules), ``dead-letter`` and ``defaults``. With Redis up every row says
``"enrichment": "store"`` or ``"missing"`` and the flagged account is denied in all three; while Redis is frozen or
stopped every keyed row says ``"failed"`` and gets what its graph declares: the decision ``review`` with the
enrichment's reason, an ``enrichment-failed`` dead letter (HTTP 503 on demand), or the rules' decision on the
defaults (the flagged account is no longer denied). Here the entity key is a request feature (``account_id``):
file rows and on-demand requests carry no Kafka key.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.redis_entities import EntityFeatureStore
from tests.conftest import REPO, ServeProcess

POLICIES = {"fg-review": None, "fg-dead": "dead-letter", "fg-open": "defaults"}  # None: the default (review)
REVIEW_REASON = "enrichment 'account' failed: the feature store did not answer"
FLAGGED_REASON = "account flagged by investigations"
ACCOUNTS = (7, 3, 42)  # flagged, known, unknown
FEATURES = ("amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days")


def policy_graphs(directory: Path, key_feature: str | None = None, timeout_ms: int = 1000) -> None:
    """The shipped fraud graph once per entry of ``POLICIES`` (graph name -> on_failure), with the lookup's
    ``timeout_ms`` (generous: a busy machine must not fail a lookup while Redis is up) and, when given, a request
    feature as the entity key instead of the request's key."""
    text = (REPO / "examples" / "graphs" / "fraud-graph.toml").read_text()
    directory.mkdir(parents=True, exist_ok=True)
    for name, on_failure in POLICIES.items():
        graph = text.replace('name = "fraud-graph"', f'name = "{name}"')
        policy = f"timeout_ms = {timeout_ms}\n" + (f'on_failure = "{on_failure}"\n' if on_failure else "")
        graph = graph.replace(
            "features = { chargebacks_90d = 0.0, flagged = 0.0 }\n",
            "features = { chargebacks_90d = 0.0, flagged = 0.0 }\n" + policy,
        )
        if key_feature is not None:
            graph = graph.replace('key = "key"', f'key = "{key_feature}"')
            graph = graph.replace('"account_age_days"]', f'"account_age_days", "{key_feature}"]', 1)
        assert graph.count(policy) == 1
        (directory / f"{name}.toml").write_text(graph)


def load_accounts(address: str, keys: list[bytes]) -> None:
    """Every key known with no chargebacks; the first one flagged."""
    rows = [(key, {"chargebacks_90d": 0.0, "flagged": 1.0 if i == 0 else 0.0}) for i, key in enumerate(keys)]
    EntityFeatureStore(redis.Redis.from_url(address)).put("account", rows)


def repository(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud", models / "fraud")
    shutil.copytree(REPO / "examples" / "models" / "fraud-online", models / "fraud-online")
    policy_graphs(tmp_path / "graphs", key_feature="account_id")
    return models


def request_features(seed: int) -> dict[str, float]:
    return synthetic.features_of(synthetic.transactions(1, seed=seed)[0])


@pytest.fixture
def frozen_then_stopped(tmp_path: Path) -> Iterator[devstack.ServerInfo]:
    server = devstack.start_redis(tmp_path / "redis", die_with_parent=True)
    load_accounts(server.address, [str(a).encode() for a in ACCOUNTS[:2]])
    try:
        yield server
    finally:
        devstack.stop_server(server)  # the tests thaw it themselves; a stopped one is not running any more


def environ(models: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    return env | {"STREAMER_MODELS_DIR": str(models), "STREAMER_REDIS_URL": redis_url}


def check_up(outcome: dict[tuple[str, int], dict]) -> None:
    """Redis answering: features read (or the key unknown), and the flagged account denied by every graph."""
    for (graph, account), answer in outcome.items():
        assert answer["enrichment"] == ("missing" if account == 42 else "store"), (graph, account, answer)
        if account == 7:
            assert (answer["decision"], answer["reasons"]) == ("deny", [FLAGGED_REASON]), (graph, answer)


def check_failed(outcome: dict[tuple[str, int], dict]) -> None:
    """Redis not answering: what each graph's on_failure says, for every row."""
    for (graph, _), answer in outcome.items():
        if graph == "fg-dead":
            assert answer["error"] == "enrichment-failed", answer
            assert "stage 'account': the entity features could not be read" in answer["detail"]
            continue
        assert answer["enrichment"] == "failed", (graph, answer)
        if graph == "fg-review":
            assert (answer["decision"], answer["reasons"]) == ("review", [REVIEW_REASON])
        else:  # fail open: the rules decide on the defaults, so the flagged account is not known as flagged
            assert answer["reasons"] != [FLAGGED_REASON] and answer["reasons"] != [REVIEW_REASON]


# ------------------------------------------------------------------------------------------------ streamer batch


def run_batch(tmp_path: Path, models: Path, redis_url: str, name: str) -> dict[tuple[str, int], dict]:
    """Every graph x every account through ``streamer batch``: its prediction, or its reject (error, detail)."""
    lines, keys = [], {}
    for graph in POLICIES:
        for k, account in enumerate(ACCOUNTS):
            rid = f"{name}-{graph}-{account}"
            features = request_features(k) | {"account_id": float(account)}
            lines.append(json.dumps({"id": rid, "model": graph, "features": features}))
            keys[rid] = (graph, account)
    (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer.cli",
            "batch",
            f"{name}.jsonl",
            "--out",
            f"{name}.out.jsonl",
            "--quiet",
            "--dead-letters",
            f"{name}.dead.jsonl",
        ],
        cwd=tmp_path,
        env=environ(models, redis_url),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    outcome = {}
    for line in (tmp_path / f"{name}.out.jsonl").read_text().splitlines():
        prediction = json.loads(line)
        outcome[keys[prediction["id"]]] = prediction
    for line in (tmp_path / f"{name}.dead.jsonl").read_text().splitlines():
        reject = json.loads(line)
        outcome[keys[json.loads(reject["original"])["id"]]] = reject
    assert set(outcome) == set(keys.values())
    return outcome


def test_streamer_batch_with_redis_frozen_then_stopped(
    tmp_path: Path, frozen_then_stopped: devstack.ServerInfo
) -> None:
    server = frozen_then_stopped
    models = repository(tmp_path)
    check_up(run_batch(tmp_path, models, server.address, "up"))
    os.kill(server.pid, signal.SIGSTOP)
    try:
        check_failed(run_batch(tmp_path, models, server.address, "frozen"))
    finally:
        os.kill(server.pid, signal.SIGCONT)
    check_up(run_batch(tmp_path, models, server.address, "thawed"))
    devstack.stop_server(server)
    check_failed(run_batch(tmp_path, models, server.address, "stopped"))


# ------------------------------------------------------------------------------------------------ streamer serve


def infer(address: str, graph: str, account: int, seed: int) -> dict:
    """One on-demand request (one tensor per feature): the answer's fields by name, or its refusal."""
    features = request_features(seed) | {"account_id": float(account)}
    body = {
        "id": f"q-{graph}-{account}",
        "inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]} for n, v in features.items()],
    }
    request = urllib.request.Request(
        f"http://{address}/v2/models/{graph}/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as refused:
        message = json.loads(refused.read())["error"]
        reason, _, detail = message.partition(": ")
        return {"status": refused.code, "error": reason, "detail": detail}
    fields = {t["name"]: t["data"][0] for t in answer["outputs"]}
    fields["reasons"] = json.loads(fields["reasons"])  # BYTES: each row's reasons as JSON text
    return fields


def ask_all(address: str) -> dict[tuple[str, int], dict]:
    return {(g, a): infer(address, g, a, k) for g in POLICIES for k, a in enumerate(ACCOUNTS)}


@pytest.fixture
def serve(tmp_path: Path, frozen_then_stopped: devstack.ServerInfo) -> Iterator[str]:
    models = repository(tmp_path)
    env = environ(models, frozen_then_stopped.address) | {"STREAMER_BATCH_MAX_WAIT_MS": "2"}
    serving = ServeProcess(tmp_path, env, start_timeout_s=120)
    try:
        yield serving.address
    finally:
        serving.stop(60)


def test_streamer_serve_with_redis_frozen_then_stopped(serve: str, frozen_then_stopped: devstack.ServerInfo) -> None:
    server = frozen_then_stopped
    check_up(ask_all(serve))
    os.kill(server.pid, signal.SIGSTOP)
    try:
        frozen = ask_all(serve)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    check_failed(frozen)
    assert {a["status"] for (g, _), a in frozen.items() if g == "fg-dead"} == {503}
    deadline = time.monotonic() + 60  # the breaker tries again a second after the last failure
    while infer(serve, "fg-review", 3, 0)["enrichment"] != "store":
        assert time.monotonic() < deadline, "lookups did not resume after Redis did"
        time.sleep(0.2)
    check_up(ask_all(serve))
    devstack.stop_server(server)
    stopped = ask_all(serve)
    check_failed(stopped)
    assert {a["status"] for (g, _), a in stopped.items() if g == "fg-dead"} == {503}
