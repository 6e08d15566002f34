"""The state-store contract (``tests/contract/state_store_checks.py``) against the in-memory store and the Redis
one (a real redis-server: the embedded one of ``tests/conftest.py``, never a fake)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from streamer.adapters import devstack
from streamer.adapters.redis_state import RedisStateStore
from tests.contract.state_store_checks import CHECKS, Check, Harness
from tests.memory_state_store import MemoryStateStore


def memory_harness() -> Harness:
    clock = [0.0]

    def make(**options: Any) -> MemoryStateStore:
        return MemoryStateStore(clock=lambda: clock[0], lock=threading.Lock(), **options)

    def pass_time(seconds: float) -> None:
        clock[0] += seconds

    return Harness(make, pass_time)


def redis_harness(url: str) -> Harness:
    def make(**options: Any) -> RedisStateStore:
        return RedisStateStore.from_url(url, prefix=f"contract-{uuid.uuid4().hex[:8]}", **options)

    return Harness(make, time.sleep)  # Redis expires on its own clock


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        return memory_harness()
    server: devstack.ServerInfo = request.getfixturevalue("redis_server")
    return redis_harness(server.address)


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_state_store_contract(harness: Harness, check: Check) -> None:
    check(harness)
