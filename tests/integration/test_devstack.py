"""The embedded stack, through the fixtures and through `streamer dev up/down/status` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient

from streamer.adapters import devstack

STREAMER = [sys.executable, "-m", "streamer.cli"]


def test_the_fixture_servers_answer_real_round_trips(
    kafka_broker: devstack.ServerInfo, redis_server: devstack.ServerInfo
) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_broker.address}).list_topics(timeout=5)
    assert metadata.brokers
    client = redis.Redis.from_url(redis_server.address)
    assert client.ping() is True
    assert client.info("server")["redis_version"].startswith("6.")


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | env
    return subprocess.run(STREAMER + args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def test_dev_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    up = run(["dev", "up"], tmp_path)
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / ".streamer" / "dev.json").read_text())
    pids = [state["broker"]["pid"], state["redis"]["pid"]]
    assert all(devstack.is_running(pid) for pid in pids)
    assert state["kafka_bootstrap"] in up.stdout and state["redis_url"] in up.stdout

    again = run(["dev", "up"], tmp_path)
    assert again.returncode == 0 and "already running" in again.stdout
    assert json.loads((tmp_path / ".streamer" / "dev.json").read_text())["broker"]["pid"] == pids[0]

    status = run(["dev", "status"], tmp_path)
    assert status.returncode == 0 and status.stdout.count(" up ") == 2, status.stdout

    down = run(["dev", "down"], tmp_path)
    assert down.returncode == 0, down.stderr
    assert not any(devstack.is_running(pid) for pid in pids)
    assert not (tmp_path / ".streamer" / "dev.json").exists()
    assert run(["dev", "status"], tmp_path).returncode == 1
    assert "nothing was running" in run(["dev", "down"], tmp_path).stdout


def test_a_server_that_dies_at_start_fails_loudly_with_its_log(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "broken-broker"
    fake.write_text("#!/bin/sh\necho 'cannot bind: simulated failure' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(devstack, "broker_binary", lambda: str(fake))
    try:
        devstack.start_broker(tmp_path / "logs", die_with_parent=True, timeout_s=5)
    except devstack.DevStackError as exc:
        assert "exited during start-up" in str(exc) and "simulated failure" in str(exc)
    else:
        raise AssertionError("a dead broker was reported ready")


def test_fixture_servers_die_with_their_parent(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from streamer.adapters import devstack\n"
        f"s = devstack.start_redis(Path({str(tmp_path)!r}), die_with_parent=True)\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert devstack.is_running(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while devstack.is_running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not devstack.is_running(child), "the kernel did not kill the orphaned server"
