"""Redis with an ACL user (not only ``requirepass``): Debian's redis-server 7 with a ``streamer`` user limited
to the ``streamer:*`` keys and the default user switched off, as a managed Redis is set up. The URL carries
user and password (``redis://streamer:pw@host:port``); a wrong password fails in one line that does not
contain it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamer.adapters import devstack
from streamer.adapters.redis_state import JOINED, LoggedPrediction, RedisStateStore
from streamer.config import RedisSettings
from streamer.core.errors import StateStoreError
from tests.integration.test_redis_tls import system_redis

PASSWORD = "acl-Redis-pw-93ad"  # a test secret that must never be printed
WRONG = "wrong-Redis-pw-5be0"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[int]:
    """The port of a redis-server whose only enabled user is ``streamer`` (keys ``streamer:*``)."""
    port = devstack.free_port()
    (tmp_path / "redis.conf").write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {tmp_path}\n'
        f"user default off\nuser streamer on >{PASSWORD} ~streamer:* +@all\n"
    )
    client = redis.Redis(host="127.0.0.1", port=port, username="streamer", password=PASSWORD)
    with system_redis([str(tmp_path / "redis.conf")], tmp_path, client):
        yield port


def test_the_acl_user_logs_predictions_and_joins_labels(acl_redis: int) -> None:
    url = f"redis://streamer:{PASSWORD}@127.0.0.1:{acl_redis}/0"
    store = RedisStateStore.from_settings(RedisSettings(url=url))
    store.log_predictions([LoggedPrediction("r-1", "fraud", "1", 0.9, 0.5, time.time())])
    assert store.apply_labels([("r-1", 1)], time.time()) == [JOINED]


def test_the_acl_confines_the_user_to_its_prefix(acl_redis: int) -> None:
    """The ACL is really in force: the same user cannot touch keys outside ``streamer:*``."""
    url = f"redis://streamer:{PASSWORD}@127.0.0.1:{acl_redis}/0"
    store = RedisStateStore.from_settings(RedisSettings(url=url, key_prefix="other"))
    with pytest.raises(StateStoreError, match="can't access") as refused:
        store.log_predictions([LoggedPrediction("r-1", "fraud", "1", 0.9, 0.5, time.time())])
    assert isinstance(refused.value.__cause__, redis.ResponseError) and not refused.value.retriable


def test_the_default_user_is_refused(acl_redis: int) -> None:
    store = RedisStateStore.from_settings(RedisSettings(url=f"redis://127.0.0.1:{acl_redis}/0"))
    with pytest.raises(StateStoreError) as refused:
        store.log_predictions([LoggedPrediction("r-1", "fraud", "1", 0.9, 0.5, time.time())])
    assert isinstance(refused.value.__cause__, redis.exceptions.AuthenticationError) and not refused.value.retriable


@pytest.mark.parametrize(
    "env",
    [
        {"STREAMER_REDIS_URL": "redis://streamer:{wrong}@127.0.0.1:{port}/0"},
        {"STREAMER_REDIS_URL": "redis://streamer@127.0.0.1:{port}/0", "STREAMER_REDIS_PASSWORD": "{wrong}"},
    ],
    ids=["password-in-url", "password-setting"],
)
def test_a_wrong_acl_password_fails_in_one_line_without_the_password(
    acl_redis: int, tmp_path: Path, env: dict[str, str]
) -> None:
    settings = {k: v.format(wrong=WRONG, port=acl_redis) for k, v in env.items()}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | settings
    environ["STREAMER_STATE_DIR"] = str(tmp_path / "state")
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "features", "get", "account", "a-1"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert WRONG not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
