"""Shared fixtures: the real embedded servers (session-scoped), unique topics, and the hypothesis profile.

The servers are the same code as `streamer dev up` (``streamer.adapters.devstack``), started with
``die_with_parent`` so a killed test run leaves no process behind. A server that does not come up fails the
test session with its log; nothing here ever skips.
"""

from __future__ import annotations

import itertools
import os
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
