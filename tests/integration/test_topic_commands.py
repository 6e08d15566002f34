"""The topic guard rails and the shell's message commands against the real broker: ``topics list | describe |
create NAME | delete``, ``produce`` refusing a missing topic (and creating none), ``consume --partition --offset
--from-end``, ``label`` and ``produce --labels-out``, and a warmed producer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin, client_config, partition_offsets, warmed_producer
from tests.conftest import REPO

Cli = Callable[..., subprocess.CompletedProcess[str]]


def environment(bootstrap: str, **env: str) -> dict[str, str]:
    """This process's environment without STREAMER_*, this checkout first on the path, then ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return environ | {"STREAMER_KAFKA_BOOTSTRAP": bootstrap, "STREAMER_MODELS_DIR": str(REPO / "models")} | env


@pytest.fixture
def cli(kafka_broker: devstack.ServerInfo, tmp_path: Path) -> Cli:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamer.cli", *args],
            cwd=tmp_path,
            env=environment(kafka_broker.address, **env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def produce_to(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    """Records written in one batch per partition: the embedded broker then reports a wrong end offset."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for partition, count in per_partition.items():
        for index in range(count):
            producer.produce(topic, f"{partition}-{index}".encode(), partition=partition)
    assert producer.flush(30) == 0


def test_describe_reads_true_end_offsets_and_the_groups_lag(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], cli: Cli
) -> None:
    topic = topic_factory("described", partitions=3)
    produce_to(kafka_broker.address, topic, {0: 120, 1: 7})
    group = f"group-{topic}"
    committer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 100)], asynchronous=False)
    committer.close()
    rows = partition_offsets(kafka_broker.address, {}, topic, group)
    assert [(r.partition, r.first, r.end, r.committed, r.lag) for r in rows] == [
        (0, 0, 120, 100, 20),
        (1, 0, 7, None, 7),
        (2, 0, 0, None, 0),
    ]
    shown = cli("topics", "describe", topic, STREAMER_REQUESTS_TOPIC=topic, STREAMER_GROUP_ID=group)
    assert shown.returncode == 0, shown.stderr
    assert f"{topic}: 3 partitions, group {group}" in shown.stdout
    assert "│ all " in shown.stdout and "127" in shown.stdout  # records of all partitions
    listed = cli("topics", "list", STREAMER_REQUESTS_TOPIC=topic)
    assert listed.returncode == 0 and topic in listed.stdout and "topics.requests" in listed.stdout


def test_create_named_topics_takes_the_request_topics_count_and_delete_needs_yes(
    kafka_broker: devstack.ServerInfo,
    topic_factory: Callable[..., str],
    unique_name: Callable[[str], str],
    cli: Cli,
) -> None:
    requests = topic_factory("req", partitions=3)
    target = unique_name("predictions-v2")
    created = cli("topics", "create", target, STREAMER_REQUESTS_TOPIC=requests)
    assert created.returncode == 0, created.stderr
    admin = KafkaAdmin(kafka_broker.address)
    assert admin.partition_counts([target]) == {target: 3}
    refused = cli("topics", "delete", target)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert admin.partition_counts([target]) == {target: 3}
    deleted = cli("topics", "delete", target, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert admin.partition_counts([target]) == {}


def test_a_mismatch_is_exit_2_and_following_the_advice_repairs_it(
    kafka_broker: devstack.ServerInfo, unique_name: Callable[[str], str], cli: Cli
) -> None:
    names = {
        v: unique_name(v.lower()) for v in ("REQUESTS", "PREDICTIONS", "FEEDBACK", "DLQ", "MODEL_EVENTS", "SHADOW")
    }
    env = {f"STREAMER_{k}_TOPIC": v for k, v in names.items()}
    admin = KafkaAdmin(kafka_broker.address)
    admin.create_topics([names["REQUESTS"]], 2)
    admin.create_topics([names["PREDICTIONS"]], 4)  # as `produce` before `topics create` used to leave them
    result = cli("topics", "create", **env)
    assert result.returncode == 2
    assert "exists with 4, expected 2" in result.stdout
    assert f"`streamer topics delete {names['PREDICTIONS']} --yes`" in result.stderr
    assert "`streamer topics create --partitions 2`" in result.stderr
    assert cli("topics", "delete", names["PREDICTIONS"], "--yes", **env).returncode == 0
    again = cli("topics", "create", "--partitions", "2", **env)
    assert again.returncode == 0, again.stderr
    assert set(admin.partition_counts(names.values()).values()) == {2}


def test_produce_refuses_a_missing_topic_and_creates_none(
    kafka_broker: devstack.ServerInfo, unique_name: Callable[[str], str], cli: Cli
) -> None:
    missing = unique_name("nowhere")
    result = cli("produce", "--count", "3", "--topic", missing)
    assert result.returncode == 2
    assert f"create it with `streamer topics create {missing}`" in result.stderr
    assert KafkaAdmin(kafka_broker.address).partition_counts([missing]) == {}


def test_consume_reads_chosen_partitions_from_an_offset_or_the_end(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], cli: Cli
) -> None:
    topic = topic_factory("consumed", partitions=2)
    produce_to(kafka_broker.address, topic, {0: 10, 1: 5})
    some = cli("consume", "--topic", topic, "--partition", "0", "--offset", "7", "--timeout", "2", "--meta")
    assert some.returncode == 0, some.stderr
    read = [json.loads(line) for line in some.stdout.splitlines()]
    assert [(r["partition"], r["offset"], r["value"]) for r in read] == [(0, o, f"0-{o}") for o in (7, 8, 9)]
    counted = cli("consume", "--topic", topic, "--partition", "1", "--count", "2")
    assert counted.stdout.splitlines() == ["1-0", "1-1"]
    # from the end: only what is written after it started (records go on being written until it has read one)
    command = [sys.executable, "-m", "streamer.cli", "consume", "--topic", topic, "--from-end", "--count", "1"]
    tail = subprocess.Popen(
        [*command, "--timeout", "60"],
        env=environment(kafka_broker.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    producer = Producer({"bootstrap.servers": kafka_broker.address})
    try:
        for attempt in range(90):
            producer.produce(topic, f"late-{attempt}".encode(), partition=1)
            producer.flush(10)
            try:
                out, err = tail.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                continue
        assert tail.returncode == 0, err
        assert out.splitlines()[0].startswith("late-")  # never one of the records written before it started
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    refused = cli("consume", "--topic", topic, "--partition", "5", "--timeout", "1")
    assert refused.returncode == 2 and "has no partition 5 (it has 2: 0-1)" in refused.stderr


def test_labels_from_the_shell_reach_the_feedback_topic(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], cli: Cli, tmp_path: Path
) -> None:
    requests, feedback = topic_factory("req", partitions=2), topic_factory("feedback", partitions=2)
    env = {"STREAMER_REQUESTS_TOPIC": requests, "STREAMER_FEEDBACK_TOPIC": feedback}
    produced = cli("produce", "--count", "20", "--seed", "4", "--labels-out", "labels.jsonl", "--quiet", **env)
    assert produced.returncode == 0, produced.stderr
    lines = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    consumed = cli("consume", "--topic", requests, "--timeout", "2", **env).stdout.splitlines()
    sent_ids = {json.loads(line)["id"] for line in consumed}
    assert {line["value"]["id"] for line in lines} == sent_ids and len(sent_ids) == 20
    assert cli("label", "--file", "labels.jsonl", "--quiet", **env).returncode == 0
    one = cli("label", "r-4-x-0", "1", "--key", "card-9", **env)
    assert one.returncode == 0 and "sent 1 label" in one.stderr
    read = cli("consume", "--topic", feedback, "--timeout", "2", "--meta", **env)
    got = [json.loads(line) for line in read.stdout.splitlines()]
    values = sorted((g["key"], g["value"]) for g in got)
    expected = sorted(
        [(line["key"], json.dumps(line["value"])) for line in lines] + [("card-9", '{"id": "r-4-x-0", "label": 1}')]
    )
    assert values == expected


def test_a_warmed_producer_lists_every_topic_and_creates_none(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    existing = topic_factory("warm", partitions=1)
    producer, metadata = warmed_producer(client_config(kafka_broker.address, {}, **{"enable.idempotence": True}))
    assert existing in metadata.topics
    producer.produce(existing, b"x")
    assert producer.flush(10) == 0
    absent = unique_name("absent")
    assert absent not in metadata.topics
    assert KafkaAdmin(kafka_broker.address).partition_counts([absent]) == {}
