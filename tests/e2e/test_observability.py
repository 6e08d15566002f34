"""Observability against real servers: promtool on the shipped config and rules, and a real Prometheus
scraping a real worker, through which every dashboard query must run and return series."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from streamer import synthetic
from streamer.adapters import devstack
from tests.conftest import REPO
from tests.e2e.conftest import LEARNING_CONFIG, Topics, WorkerProcess, models_with_online, produce

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus" / "rules"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_config_and_the_rules_pass_their_unit_tests() -> None:
    config = run("promtool", "check", "config", str(REPO / "deploy/prometheus/prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run("promtool", "check", "rules", str(RULES / "streamer.yml"))
    assert rules.returncode == 0 and "SUCCESS" in rules.stdout, rules.stdout + rules.stderr
    tests = subprocess.run(
        ["promtool", "test", "rules", "streamer_test.yml"], cwd=RULES, capture_output=True, text=True, timeout=60
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_every_dashboard_query_returns_series_from_a_real_prometheus_scraping_a_worker(
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """The worker runs the whole feature set -- Redis, an online model, labels, drift, the accuracy floor -- so
    that every panel of both dashboards has something to show."""
    t = topics(4)
    config = LEARNING_CONFIG.format(prefix=f"obs{uuid.uuid4().hex[:6]}").replace(
        "drift_min_rows = 300", "drift_min_rows = 50"
    )
    worker = worker_factory(
        t,
        config,
        STREAMER_REDIS_URL=redis_server.address,
        STREAMER_MODELS_DIR=str(models_with_online(tmp_path)),
        STREAMER_DEFAULT_MODEL="fraud",
    )
    worker.wait_assigned()
    port = re.search(r"metrics: http://127.0.0.1:(\d+)/metrics", worker.log()).group(1)
    rows = synthetic.transactions(400, seed=21)
    truth = synthetic.labels(rows, seed=21)
    good = [
        (
            f"k{i % 40}".encode(),
            json.dumps(
                {
                    "id": f"obs-{i}",
                    "model": "fraud-online" if i % 2 else "fraud",
                    "features": synthetic.features_of(r),
                }
            ).encode(),
            None,
        )
        for i, r in enumerate(rows)
    ]
    labels = [(b"k", json.dumps({"id": f"obs-{i}", "label": int(y)}).encode(), None) for i, y in enumerate(truth)]
    bad = [(b"bad", b"not json", None)] * 20
    workdir = Path(tempfile.mkdtemp())
    prometheus_port = devstack.free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES / "streamer.yml")],
        "scrape_configs": [{"job_name": "streamer", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(workdir / "prometheus.log", "wb") as log_file:
        server = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=devstack._die_with_parent,
        )
    base = f"http://127.0.0.1:{prometheus_port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                up = query(base, 'up{job="streamer"}')["data"]["result"]
                if up and up[0]["value"][1] == "1":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"Prometheus never scraped the worker:\n{(workdir / 'prometheus.log').read_text()[-3000:]}"
            )
        for second in range(8):  # traffic spread over several scrapes, so that rates have two samples
            produce(kafka_broker.address, t.requests, good[second * 50 : (second + 1) * 50] + bad[:3])
            time.sleep(1)
            produce(kafka_broker.address, t.feedback, labels[second * 50 : (second + 1) * 50])
        exprs = [
            (d.name, target["expr"])
            for d in sorted(DASHBOARDS.glob("*.json"))
            for panel in json.loads(d.read_text())["panels"]
            for target in panel["targets"]
        ]
        exprs += [
            ("recording rule", r["record"])
            for r in yaml.safe_load((RULES / "streamer.yml").read_text())["groups"][0]["rules"]
        ]
        empty: list[str] = []
        for where, expr in exprs:
            deadline = time.monotonic() + 20
            while True:
                answer = query(base, expr)
                assert answer["status"] == "success", f"{where}: {expr}: {answer}"
                if answer["data"]["result"]:
                    break
                if time.monotonic() > deadline:
                    empty.append(f"{where}: {expr}")
                    break
                time.sleep(1)
        assert not empty, "queries with no series:\n" + "\n".join(empty)
    finally:
        server.terminate()
        server.wait(20)


def test_json_logs_have_one_object_per_line_and_no_line_per_request(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    t = topics(2)
    worker = worker_factory(t, STREAMER_LOG_JSON="1")
    worker.wait_assigned()
    rows = synthetic.transactions(1000, seed=5)
    messages = [(b"k", json.dumps({"features": synthetic.features_of(r)}).encode(), None) for r in rows] + [
        (b"k", b"broken", None)
    ] * 50
    produce(kafka_broker.address, t.requests, messages)
    from tests.e2e.conftest import read_all

    assert len(read_all(kafka_broker.address, [t.predictions, t.dlq], len(messages))) == len(messages)
    lines = [line for line in worker.log().splitlines() if line.strip() and not line.startswith("metrics: ")]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert sum("loaded model fraud@1" in r["message"] for r in records) == 1
    assert any("assigned partitions" in r["message"] for r in records)
    assert len(records) < 150, f"{len(records)} log lines for {len(messages)} requests: something logs per request"
