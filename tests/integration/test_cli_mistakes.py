"""Every command driven with a user's mistakes, as a user makes them: wrong names, missing files, bad config,
taken ports, servers down.

Each case runs ``streamer`` as a child process (this checkout first on ``PYTHONPATH``) against the real embedded
broker and redis-server, and fails on any of:

- a traceback (on stdout or stderr);
- exit 0 for a mistake, or another code than the one the contract gives (2 for an operator error, 6 for a
  broker that never answered the worker);
- not exactly one ``error:`` line, or other lines beside it for a command that only answers (the worker and
  ``serve`` log at INFO; their log lines may precede it);
- text of the error eaten by rich markup, or a missing cause or fix: each case names fragments the line must
  hold verbatim (``[online]``, ``[workers]``, ``[/bold]``, ``did you mean``, the command to run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from tests.conftest import REPO

LONG_RUNNING = ("worker", "serve")


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    expect: list[str]  # fragments the error line holds verbatim
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


@dataclass
class Place:
    """The workspace every case runs in: a model repository, topics, files, and addresses up and down."""

    root: Path
    env: dict[str, str]
    topics: dict[str, str]
    taken_port: int
    dead_kafka: str
    dead_redis: str


@pytest.fixture(scope="module")
def place(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
) -> Iterator[Place]:
    root = tmp_path_factory.mktemp("mistakes")
    shutil.copytree(REPO / "models" / "fraud", root / "models" / "fraud")
    shutil.copytree(REPO / "examples" / "models", root / "graphs-example" / "models")  # graphs read "account"
    shutil.copytree(REPO / "examples" / "graphs", root / "graphs-example" / "graphs")
    (root / "in.jsonl").write_text('{"id": "a", "features": {"amount": 1}}\n')
    (root / "typo.toml").write_text('[kafka.client]\n"securty.protocol" = "SSL"\n')
    (root / "value.toml").write_text('[kafka.client]\n"security.protocol" = "SSLL"\n')
    (root / "cafile.toml").write_text(
        '[kafka.client]\n"security.protocol" = "SSL"\n"ssl.ca.location" = "/nonexistent/ca.pem"\n'
    )
    (root / "section.toml").write_text("[workers]\nengine = 'batch'\n")
    (root / "key.toml").write_text("[worker]\nengnie = 'batch'\n")
    (root / "quick.toml").write_text("[kafka]\nstartup_timeout_s = 0\n")
    (root / "labels-bad.jsonl").write_text('{"id": "a", "label": "yes"}\n')
    token = os.urandom(3).hex()
    topics = {
        role: f"mistakes-{role}-{token}" for role in ("requests", "predictions", "feedback", "dlq", "events", "shadow")
    }
    KafkaAdmin(kafka_broker.address).create_topics(topics.values(), 2)
    mismatched = {"requests": f"mm-requests-{token}", "predictions": f"mm-predictions-{token}"}
    KafkaAdmin(kafka_broker.address).create_topics([mismatched["requests"]], 2)
    KafkaAdmin(kafka_broker.address).create_topics([mismatched["predictions"]], 3)
    topics |= {f"mm-{k}": v for k, v in mismatched.items()}
    holder = socket.create_server(("127.0.0.1", 0))
    env = {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_REQUESTS_TOPIC": topics["requests"],
        "STREAMER_PREDICTIONS_TOPIC": topics["predictions"],
        "STREAMER_FEEDBACK_TOPIC": topics["feedback"],
        "STREAMER_DLQ_TOPIC": topics["dlq"],
        "STREAMER_MODEL_EVENTS_TOPIC": topics["events"],
        "STREAMER_SHADOW_TOPIC": topics["shadow"],
        "STREAMER_STATE_DIR": str(root / ".streamer"),
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_GROUP_ID": f"mistakes-{token}",
    }
    try:
        yield Place(
            root,
            env,
            topics,
            holder.getsockname()[1],
            f"127.0.0.1:{devstack.free_port()}",
            f"redis://127.0.0.1:{devstack.free_port()}/0",
        )
    finally:
        holder.close()


def cases(p: Place) -> list[Case]:
    taken = str(p.taken_port)
    mm = {"STREAMER_REQUESTS_TOPIC": p.topics["mm-requests"], "STREAMER_PREDICTIONS_TOPIC": p.topics["mm-predictions"]}
    return [
        # bad configuration
        Case(
            "config-typo-config-show", ["--config", "typo.toml", "config", "show"], ["did you mean 'security.protocol'"]
        ),
        Case("config-typo-topics", ["--config", "typo.toml", "topics", "create"], ['"securty.protocol"']),
        Case("config-typo-produce", ["--config", "typo.toml", "produce", "--count", "1"], ['"securty.protocol"']),
        Case("config-typo-consume", ["--config", "typo.toml", "consume", "--timeout", "1"], ['"securty.protocol"']),
        Case("config-typo-worker", ["--config", "typo.toml", "worker"], ['"securty.protocol"']),
        Case("config-bad-value", ["--config", "value.toml", "topics", "create"], ['"SSLL"']),
        Case("config-missing-ca", ["--config", "cafile.toml", "topics", "list"], ["/nonexistent/ca.pem"]),
        Case("config-unknown-section", ["--config", "section.toml", "models", "list"], ["[workers]", "[worker]"]),
        Case("config-unknown-key", ["--config", "key.toml", "models", "list"], ["worker.engnie", "worker.engine"]),
        Case("config-missing-file", ["--config", "nope.toml", "models", "list"], ["nope.toml"]),
        Case("env-bad-engine", ["models", "list"], ["fausst"], {"STREAMER_ENGINE": "fausst"}),
        Case("env-bad-number", ["models", "list"], ["STREAMER_BATCH_MAX_SIZE"], {"STREAMER_BATCH_MAX_SIZE": "many"}),
        Case(
            "env-bad-models-dir",
            ["models", "list"],
            ["/nonexistent/models"],
            {"STREAMER_MODELS_DIR": "/nonexistent/models"},
        ),
        # markup in messages and arguments
        Case("markup-freeze-card", ["models", "freeze", "fraud"], ["[online]"]),
        Case("markup-graph-name", ["graph", "show", "[/bold]"], ["[/bold]"]),
        Case("markup-model-name", ["models", "promote", "[red]fraud", "1"], ["[red]fraud"]),
        # wrong names
        Case("typo-batch-model", ["batch", "in.jsonl", "--model", "fraudd"], ["'fraudd'", "did you mean 'fraud'"]),
        Case("typo-batch-version", ["batch", "in.jsonl", "--model", "fraud@9"], ["fraud@9"]),
        Case("typo-eval-model", ["eval", "show", "--model", "fraudd"], ["did you mean 'fraud'"]),
        Case("typo-compare-version", ["models", "compare", "fraud", "--versions", "1,9"], ["9"]),
        Case("typo-compare-model", ["models", "compare", "fraudd"], ["did you mean 'fraud'"]),
        Case("typo-promote-model", ["models", "promote", "fraudd", "1"], ["did you mean 'fraud'"]),
        Case("typo-pin-version", ["models", "pin", "fraud", "9"], ["no version 9"]),
        Case("typo-freeze-model", ["models", "freeze", "fraudd"], ["did you mean 'fraud'"]),
        Case("typo-graph", ["graph", "show", "fraud-grpah"], ["fraud-grpah"]),
        Case(
            "typo-consume-topic", ["consume", "--topic", p.topics["requests"] + "x", "--timeout", "1"], ["did you mean"]
        ),
        Case("typo-describe-topic", ["topics", "describe", p.topics["requests"] + "x"], ["did you mean"]),
        Case("typo-batch-from-topic", ["batch", "--from-topic", p.topics["requests"] + "x"], ["did you mean"]),
        Case(
            "typo-features-entity",
            ["features", "get", "acount", "42"],
            ["did you mean 'account'"],
            {"STREAMER_MODELS_DIR": "graphs-example/models"},
        ),
        Case("consume-no-partition", ["consume", "--partition", "7", "--timeout", "1"], ["partition 7"]),
        # missing files
        Case("missing-produce-file", ["produce", "--file", "nope.jsonl"], ["nope.jsonl"]),
        Case("missing-batch-file", ["batch", "nope.jsonl"], ["nope.jsonl"]),
        Case(
            "missing-batch-output-dir",
            ["batch", "in.jsonl", "-o", "/nonexistent/out.jsonl"],
            ["/nonexistent/out.jsonl"],
        ),
        Case("missing-validate-dir", ["models", "validate", "models/fraud/9"], ["models/fraud/9"]),
        Case("missing-features-file", ["features", "load", "account", "nope.jsonl"], ["nope.jsonl"]),
        Case("missing-import-source", ["models", "import", "nope.skops", "--name", "x"], ["nope.skops"]),
        Case("missing-label-file", ["label", "--file", "nope.jsonl"], ["nope.jsonl"]),
        Case("bad-label-file", ["label", "--file", "labels-bad.jsonl"], ["labels-bad.jsonl:1"]),
        # topics
        Case(
            "produce-missing-topic",
            ["produce", "--count", "1", "--topic", "nosuch-topic"],
            ["streamer topics create nosuch-topic"],
        ),
        Case(
            "batch-to-missing-topic",
            ["batch", "in.jsonl", "--to-topic", "nosuch-topic"],
            ["streamer topics create nosuch-topic"],
        ),
        Case("topics-create-mismatch", ["topics", "create", "--partitions", "4"], ["streamer topics delete"], mm),
        Case("worker-partitions-differ", ["worker"], ["streamer topics delete"], mm),
        # taken ports and bad addresses
        Case("port-worker-faust", ["worker"], ["STREAMER_METRICS_PORT=0"], {"STREAMER_METRICS_PORT": taken}),
        Case(
            "port-worker-batch",
            ["worker"],
            ["STREAMER_METRICS_PORT=0"],
            {"STREAMER_METRICS_PORT": taken, "STREAMER_ENGINE": "batch"},
        ),
        Case("port-worker-oip", ["worker"], ["STREAMER_OIP_PORT"], {"STREAMER_OIP_PORT": taken}),
        Case("port-serve", ["serve", "--port", taken], ["--port 0"]),
        Case("host-serve", ["serve", "--host", "999.1.1.1", "--port", "0"], ["999.1.1.1"]),
        # servers down
        Case("kafka-down-topics", ["topics", "create"], [p.dead_kafka], {"STREAMER_KAFKA_BOOTSTRAP": p.dead_kafka}),
        Case(
            "kafka-down-produce",
            ["produce", "--count", "1"],
            [p.dead_kafka],
            {"STREAMER_KAFKA_BOOTSTRAP": p.dead_kafka},
        ),
        Case(
            "kafka-down-consume",
            ["consume", "--timeout", "1"],
            [p.dead_kafka],
            {"STREAMER_KAFKA_BOOTSTRAP": p.dead_kafka},
        ),
        Case("kafka-down-label", ["label", "r-1", "1"], [p.dead_kafka], {"STREAMER_KAFKA_BOOTSTRAP": p.dead_kafka}),
        Case(
            "kafka-down-worker",
            ["--config", "quick.toml", "worker"],
            [p.dead_kafka],
            {"STREAMER_KAFKA_BOOTSTRAP": p.dead_kafka},
            code=6,
        ),
        Case("redis-down-eval", ["eval", "show"], ["Redis"], {"STREAMER_REDIS_URL": p.dead_redis}),
        Case("redis-down-serving", ["models", "serving"], ["Redis"], {"STREAMER_REDIS_URL": p.dead_redis}),
        Case("redis-down-pin", ["models", "pin", "fraud", "1"], ["Redis"], {"STREAMER_REDIS_URL": p.dead_redis}),
        Case(
            "redis-down-features", ["features", "get", "account", "a"], ["Redis"], {"STREAMER_REDIS_URL": p.dead_redis}
        ),
        Case("redis-down-compare", ["models", "compare", "fraud"], ["Redis"], {"STREAMER_REDIS_URL": p.dead_redis}),
    ]


CASE_IDS = [
    "config-typo-config-show", "config-typo-topics", "config-typo-produce", "config-typo-consume",
    "config-typo-worker", "config-bad-value", "config-missing-ca", "config-unknown-section", "config-unknown-key",
    "config-missing-file", "env-bad-engine", "env-bad-number", "env-bad-models-dir", "markup-freeze-card",
    "markup-graph-name", "markup-model-name", "typo-batch-model", "typo-batch-version", "typo-eval-model",
    "typo-compare-version", "typo-compare-model", "typo-promote-model", "typo-pin-version", "typo-freeze-model",
    "typo-graph", "typo-consume-topic", "typo-describe-topic", "typo-batch-from-topic", "typo-features-entity",
    "consume-no-partition",
    "missing-produce-file", "missing-batch-file", "missing-batch-output-dir", "missing-validate-dir",
    "missing-features-file", "missing-import-source", "missing-label-file", "bad-label-file",
    "produce-missing-topic", "batch-to-missing-topic", "topics-create-mismatch", "worker-partitions-differ",
    "port-worker-faust", "port-worker-batch", "port-worker-oip", "port-serve", "host-serve", "kafka-down-topics",
    "kafka-down-produce", "kafka-down-consume", "kafka-down-label", "kafka-down-worker", "redis-down-eval",
    "redis-down-serving", "redis-down-pin", "redis-down-features", "redis-down-compare",
]  # fmt: skip


def run(p: Place, case: Case) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    environ |= p.env | case.env
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *case.args],
        cwd=p.root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )


def problems(case: Case, result: subprocess.CompletedProcess[str]) -> list[str]:
    """What is wrong with how the command met the mistake (empty: one clear line, the right exit code)."""
    found = []
    if "Traceback" in result.stderr + result.stdout:
        found.append("traceback")
    if result.returncode == 0:
        found.append("exit 0")
    elif result.returncode != case.code:
        found.append(f"exit {result.returncode}, not {case.code}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if len(errors) != 1:
        found.append(f"{len(errors)} error lines")
    elif not any(arg in LONG_RUNNING for arg in case.args) and len(lines) != 1:
        found.append(f"{len(lines)} lines on stderr")
    text = " ".join(errors)
    missing = [fragment for fragment in case.expect if fragment not in text]
    if missing:
        found.append(f"missing {missing}")
    return found


def test_the_cases_are_all_listed(place: Place) -> None:
    assert [case.id for case in cases(place)] == CASE_IDS


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_a_mistake_is_one_clear_line(place: Place, case_id: str) -> None:
    case = next(c for c in cases(place) if c.id == case_id)
    result = run(place, case)
    found = problems(case, result)
    assert not found, f"{case.id}: {'; '.join(found)}\nexit {result.returncode}\n{result.stderr[-3000:]}"
