"""Shared fixtures: the real embedded servers (session-scoped), unique topics, and the hypothesis profile.

The servers are the same code as `streamer dev up` (``streamer.adapters.devstack``), started with
``die_with_parent`` so a killed test run leaves no process behind. A server that does not come up fails the
test session with its log; nothing here ever skips.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from streamer.adapters import devstack

settings.register_profile(
    "streamer", max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "streamer"))

REPO = Path(__file__).resolve().parent.parent


class ServeProcess:
    """``streamer serve --port 0`` started as a user does (its own process, ``cwd`` holding its models and
    ``streamer.toml``), its output in ``cwd/serve.log``; ``address`` is the ``host:port`` it printed."""

    def __init__(self, cwd: Path, env: dict[str, str], start_timeout_s: float) -> None:
        self.log_path = cwd / "serve.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamer.cli", "serve", "--port", "0"], cwd=cwd, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + start_timeout_s
        while not (match := re.search(r"oip: http://(\S+)/v2", self.log())):
            assert self.process.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)
        self.address = match.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then its exit code; killed (and -9) if it has not exited within ``timeout_s``."""
        self.process.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@pytest.fixture(scope="session")
def stack_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def kafka_broker(stack_logs: Path) -> Iterator[devstack.ServerInfo]:
    """A real Tansu broker on a free loopback port; yields its info (``.address`` is the bootstrap)."""
    server = devstack.start_broker(stack_logs / "kafka", die_with_parent=True)
    yield server
    devstack.stop_server(server)


@pytest.fixture(scope="session")
def redis_server(stack_logs: Path) -> Iterator[devstack.ServerInfo]:
    """A real redis-server on a free loopback port; yields its info (``.address`` is the URL)."""
    server = devstack.start_redis(stack_logs / "redis", die_with_parent=True)
    yield server
    devstack.stop_server(server)


_counter = itertools.count()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names unique to this test (topics, groups), readable in broker logs."""
    test = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:40]
    token = uuid.uuid4().hex[:6]

    def make(prefix: str) -> str:
        return f"{prefix}-{test}-{token}-{next(_counter)}"

    return make


@pytest.fixture
def topic_factory(kafka_broker: devstack.ServerInfo, unique_name: Callable[[str], str]) -> Callable[..., str]:
    """Create a fresh topic with ``partitions`` partitions and return its name."""
    from streamer.adapters.kafka_admin import KafkaAdmin

    admin = KafkaAdmin(kafka_broker.address)

    def create(prefix: str = "t", partitions: int = 4) -> str:
        name = unique_name(prefix)
        admin.create_topics([name], partitions)
        return name

    return create
