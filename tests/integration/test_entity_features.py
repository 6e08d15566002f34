"""Entity features (the enrichment stage's Redis adapter) against a real redis-server: what each row gets, one
round trip per batch, binary keys, the failure policy (defaults, error, breaker, recovery) with a server stopped,
frozen and restarted, AUTH and TLS from the settings, and `streamer features load/get`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from streamer.adapters import devstack
from streamer.adapters.redis_entities import EntityFeatureStore, Lookup, feature_key
from streamer.config import RedisSettings
from tests.integration import test_redis_tls
from tests.integration.test_topics_and_models import run

tls_redis = test_redis_tls.tls_redis  # the TLS + AUTH server fixture, shared

FEATURES = ("txn_count_24h", "avg_amount_30d", "chargebacks", "age_days")
DEFAULTS = (0.0, -1.0, 0.0, 365.0)


class FakeClock:
    """The breaker's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(redis_server: devstack.ServerInfo) -> redis.Redis:
    return redis.Redis.from_url(redis_server.address)


@pytest.fixture
def store(client: redis.Redis) -> Iterator[EntityFeatureStore]:
    features = EntityFeatureStore(client, prefix=f"t{uuid.uuid4().hex[:8]}")
    yield features
    features.close()


def ask(keys: list[bytes | None], features: tuple[str, ...] = FEATURES) -> Lookup:
    return Lookup("account", keys, features, DEFAULTS[: len(features)])


def test_found_rows_get_their_features_in_row_order(store: EntityFeatureStore) -> None:
    assert store.put("account", [(b"a1", dict(zip(FEATURES, (3, 12.5, 0, 40), strict=True)))]) == 1
    assert store.put("account", [(b"a2", dict(zip(FEATURES, (7, 0.25, 1, 1e-3), strict=True)))]) == 1
    result = store.lookup(ask([b"a2", b"a1", b"a2"]))
    assert result.error is None and result.field_misses == 0
    assert result.values.dtype == np.float64 and result.values.shape == (3, 4)
    np.testing.assert_array_equal(result.values, [[7, 0.25, 1, 1e-3], [3, 12.5, 0, 40], [7, 0.25, 1, 1e-3]])
    assert result.found.tolist() == [True, True, True]


def test_values_keep_full_precision(store: EntityFeatureStore) -> None:
    value = 0.1 + 0.2  # 0.30000000000000004: lost by any formatting shorter than repr
    store.put("account", [(b"p", {"x": value})])
    assert store.lookup(Lookup("account", [b"p"], ("x",), (0.0,))).values[0, 0] == value


def test_a_missing_key_gets_the_defaults_and_is_not_found(store: EntityFeatureStore) -> None:
    store.put("account", [(b"here", dict.fromkeys(FEATURES, 5.0))])
    result = store.lookup(ask([b"here", b"absent"]))
    assert result.error is None
    assert result.found.tolist() == [True, False]
    np.testing.assert_array_equal(result.values[1], DEFAULTS)
    assert result.field_misses == 0  # a missing key is a row miss, not field misses


def test_a_missing_field_takes_its_default_and_counts_per_row(store: EntityFeatureStore) -> None:
    store.put("account", [(b"partial", {"txn_count_24h": 2.0, "age_days": 10.0})])
    result = store.lookup(ask([b"partial", b"partial", None]))
    assert result.found.tolist() == [True, True, False]
    np.testing.assert_array_equal(result.values[0], [2.0, -1.0, 0.0, 10.0])
    assert result.field_misses == 4  # two fields missing, in each of two rows


def test_an_unparsable_or_non_finite_value_is_a_field_miss(store: EntityFeatureStore, client: redis.Redis) -> None:
    key = store.key_of("account", b"bad")
    client.hset(
        key, mapping={"txn_count_24h": "twelve", "avg_amount_30d": "nan", "chargebacks": "inf", "age_days": " 9 "}
    )
    result = store.lookup(ask([b"bad"]))
    assert result.found.tolist() == [True] and result.error is None
    np.testing.assert_array_equal(result.values[0], [0.0, -1.0, 0.0, 9.0])
    assert result.field_misses == 3


def test_a_none_key_gets_the_defaults_without_any_redis_call(store: EntityFeatureStore) -> None:
    result = store.lookup(ask([None, None]))
    assert result.error is None and result.found.tolist() == [False, False] and result.field_misses == 0
    np.testing.assert_array_equal(result.values, [DEFAULTS, DEFAULTS])
    empty = store.lookup(ask([]))
    assert empty.values.shape == (0, 4) and empty.found.shape == (0,)
    assert store.round_trips == 0


def test_a_key_of_another_type_is_a_missing_key(store: EntityFeatureStore, client: redis.Redis) -> None:
    client.set(store.key_of("account", b"string"), "not a hash")
    store.put("account", [(b"ok", dict.fromkeys(FEATURES, 1.0))])
    result = store.lookup(ask([b"string", b"ok"]))
    assert result.error is None and result.found.tolist() == [False, True]
    np.testing.assert_array_equal(result.values, [DEFAULTS, [1.0] * 4])


def test_a_batch_is_one_round_trip_reading_each_distinct_key_once(
    store: EntityFeatureStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client side: one write of packed commands per lookup. Server side: one HMGET per distinct key and no
    other command (``INFO`` deltas, net of the ``INFO`` calls themselves)."""
    distinct = [f"k{i}".encode() for i in range(50)]
    store.put("account", [(key, dict.fromkeys(FEATURES, float(i))) for i, key in enumerate(distinct)])
    rng = np.random.default_rng(7)
    keys: list[bytes | None] = [distinct[i] for i in rng.integers(0, 50, 900)] + [None] * 100
    named = len({key for key in keys if key is not None})
    store.lookup(ask([b"warm-up"]))  # the connection's handshake is not the batch's

    def counters() -> tuple[int, int]:
        stats = client.info("commandstats").get("cmdstat_hmget", {"calls": 0})
        return int(stats["calls"]), int(client.info("stats")["total_commands_processed"])

    _, total_0 = counters()
    hmget_1, total_1 = counters()
    info_cost = total_1 - total_0  # what one counters() call adds
    writes: list[int] = []
    connection_class = store._fast.connection_pool.connection_class
    send = connection_class.send_packed_command

    def counting_send(self: redis.connection.AbstractConnection, command: object, check_health: bool = True) -> None:
        writes.append(1)
        send(self, command, check_health)

    monkeypatch.setattr(connection_class, "send_packed_command", counting_send)
    result = store.lookup(ask(keys))
    monkeypatch.undo()
    hmget_2, total_2 = counters()
    assert result.error is None and result.found[:900].all()
    assert len(writes) == 1
    assert hmget_2 - hmget_1 == named <= 50
    assert total_2 - total_1 - info_cost == named
    assert store.round_trips == 2  # the warm-up and the batch
    expected = np.array([float(key[1:]) if key is not None else np.nan for key in keys])  # key k{i} holds i
    np.testing.assert_array_equal(result.values[:900, 0], expected[:900])


def test_binary_keys_are_stored_and_read_byte_for_byte(store: EntityFeatureStore, client: redis.Redis) -> None:
    keys = [b"\xff\xfe\x00:\x80", b"caf\xc3\xa9", b"a:b:c", b"\n \t"]
    store.put("account", [(key, {"x": float(i)}) for i, key in enumerate(keys)])
    for key in keys:
        assert client.exists(store.prefix.encode() + b":entity:account:" + key) == 1
    result = store.lookup(Lookup("account", [*reversed(keys), b"\xff\xfe\x00:"], ("x",), (-1.0,)))
    assert result.values[:, 0].tolist() == [3.0, 2.0, 1.0, 0.0, -1.0]
    assert store.read("account", keys[0]) == {"x": b"0.0"}


def test_entities_of_different_types_do_not_mix(store: EntityFeatureStore) -> None:
    store.put("account", [(b"42", {"x": 1.0})])
    store.put("merchant", [(b"42", {"x": 2.0})])
    assert store.lookup(Lookup("merchant", [b"42"], ("x",), (0.0,))).values[0, 0] == 2.0
    with pytest.raises(ValueError, match="without ':'"):
        Lookup("acc:ount", [b"42"], ("x",), (0.0,))
    with pytest.raises(ValueError, match="defaults"):
        Lookup("account", [b"42"], ("x", "y"), (0.0,))


def test_put_merges_sets_a_ttl_and_refuses_non_numbers(store: EntityFeatureStore, client: redis.Redis) -> None:
    store.put("account", [(b"m", {"x": 1.0, "y": 2.0})])
    assert store.put("account", [(b"m", {"y": 3.0})], ttl_s=60) == 1
    assert store.read("account", b"m") == {"x": b"1.0", "y": b"3.0"}
    assert 0 < client.ttl(store.key_of("account", b"m")) <= 60
    many = ((f"bulk{i}".encode(), {"x": float(i)}) for i in range(2500))  # three pipelines
    assert store.put("account", many) == 2500
    assert store.lookup(Lookup("account", [b"bulk2499"], ("x",), (0.0,))).values[0, 0] == 2499.0
    with pytest.raises(ValueError, match="finite"):
        store.put("account", [(b"n", {"x": float("nan")})])
    with pytest.raises(ValueError, match="no features"):
        store.put("account", [(b"n", {})])


def test_feature_key_writes_numbers_as_the_loader_does() -> None:
    assert feature_key(123.0) == feature_key(123) == feature_key("123") == b"123"
    assert feature_key(1.5) == b"1.5"
    assert feature_key(float("nan")) is None and feature_key(float("inf")) is None and feature_key(None) is None
    assert feature_key(b"\xff") == b"\xff"


# ---------------------------------------------------------------------------------------------- failures


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[], devstack.ServerInfo]]:
    """A redis-server of this test's own (append-only, so a restart on the same port keeps the data); calling
    the fixture's value (re)starts it. Stopped at the end."""
    servers: list[devstack.ServerInfo] = []

    def start() -> devstack.ServerInfo:
        port = servers[-1].port if servers else None
        server = devstack.start_redis(tmp_path / "redis", die_with_parent=True, port=port, persistent=True)
        servers.append(server)
        return server

    yield start
    for server in servers:
        devstack.stop_server(server)


def test_redis_stopped_gives_defaults_then_the_breaker_skips_then_a_restart_recovers(
    own_redis: Callable[[], devstack.ServerInfo],
) -> None:
    server = own_redis()
    clock = FakeClock()
    store = EntityFeatureStore(redis.Redis.from_url(server.address), retry_after_s=5.0, clock=clock)
    store.put("account", [(b"a", dict.fromkeys(FEATURES, 2.0))])
    assert store.lookup(ask([b"a"])).found.tolist() == [True]

    devstack.stop_server(server)
    started = time.perf_counter()
    down = store.lookup(ask([b"a", None, b"b"]))
    assert time.perf_counter() - started < 1.0
    assert down.error is not None and "ConnectionError" in down.error
    np.testing.assert_array_equal(down.values, [DEFAULTS] * 3)
    assert down.found.tolist() == [False] * 3 and down.field_misses == 0
    assert (store.round_trips, store.failures, store.skipped) == (2, 1, 0)

    clock.now += 4.9  # within retry_after_s: not even tried
    skipped = store.lookup(ask([b"a"]))
    assert skipped.error is not None and skipped.error.startswith("not tried for another 0.10 s")
    np.testing.assert_array_equal(skipped.values, [DEFAULTS])
    assert (store.round_trips, store.failures, store.skipped) == (2, 1, 1)

    own_redis()  # back, same port, same data; the breaker still holds until its time is up
    assert store.lookup(ask([b"a"])).error is not None and store.skipped == 2
    clock.now += 0.2
    back = store.lookup(ask([b"a", b"b"]))
    assert back.error is None and back.found.tolist() == [True, False]
    np.testing.assert_array_equal(back.values, [[2.0] * 4, DEFAULTS])
    assert (store.round_trips, store.failures, store.skipped) == (3, 1, 2)
    store.close()


def test_a_frozen_redis_times_out_within_timeout_s_and_replies_never_mix(
    own_redis: Callable[[], devstack.ServerInfo],
) -> None:
    """SIGSTOP: connected, but nothing answers. The lookup gives up after ``timeout_s`` even though the given
    client has a 5 s timeout, and after SIGCONT the late reply to the timed-out batch is not read as the next
    batch's (the connection was dropped)."""
    server = own_redis()
    clock = FakeClock()
    given = redis.Redis.from_url(server.address, socket_timeout=5)
    store = EntityFeatureStore(given, timeout_s=0.05, retry_after_s=1.0, clock=clock)
    store.put("account", [(b"x", {"v": 1.0}), (b"y", {"v": 2.0})])
    assert store.lookup(Lookup("account", [b"x"], ("v",), (0.0,))).values[0, 0] == 1.0
    os.kill(server.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        frozen = store.lookup(Lookup("account", [b"x"], ("v",), (-1.0,)))
        elapsed = time.perf_counter() - started
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert frozen.error is not None and "Timeout" in frozen.error and frozen.values[0, 0] == -1.0
    assert 0.04 < elapsed < 2.5  # well under the given client's 5 s, with room for a loaded machine
    clock.now += 1.0
    after = store.lookup(Lookup("account", [b"y"], ("v",), (-1.0,)))
    assert after.error is None and after.values[0, 0] == 2.0
    store.close()


def test_a_lookup_may_wait_longer_than_the_stores_timeout_on_a_pool_of_its_own(
    own_redis: Callable[[], devstack.ServerInfo],
) -> None:
    """A graph stage's ``timeout_ms``: frozen for a moment, Redis fails the store's 50 ms lookup but answers a
    lookup that may wait 30 s once it thaws (no timing asserted: only which lookup failed)."""
    server = own_redis()
    clock = FakeClock()
    store = EntityFeatureStore(redis.Redis.from_url(server.address), timeout_s=0.05, clock=clock)
    store.put("account", [(b"x", {"v": 1.0})])
    os.kill(server.pid, signal.SIGSTOP)
    try:
        short = store.lookup(Lookup("account", [b"x"], ("v",), (-1.0,)))
        clock.now += store.retry_after_s  # past the breaker that failure opened: the next lookup tries
        thawed = threading.Timer(0.5, os.kill, (server.pid, signal.SIGCONT))
        thawed.start()
        patient = store.lookup(Lookup("account", [b"x"], ("v",), (-1.0,), timeout_s=30.0))
        thawed.join()
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert short.error is not None and "Timeout" in short.error and short.values[0, 0] == -1.0
    assert patient.error is None and patient.found.tolist() == [True] and patient.values[0, 0] == 1.0
    assert store.lookup(Lookup("account", [b"x"], ("v",), (-1.0,), timeout_s=30.0)).values[0, 0] == 1.0
    store.close()
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        Lookup("account", [b"x"], ("v",), (0.0,), timeout_s=0.0)


def test_auth_from_the_settings_carries_over_and_a_wrong_password_is_an_error_not_an_exception(
    tmp_path: Path,
) -> None:
    server = devstack.start_redis(tmp_path / "auth", die_with_parent=True, password="s3cret")
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        store = EntityFeatureStore.from_settings(RedisSettings(url=url, password="s3cret", key_prefix="authed"))
        assert store.prefix == "authed"
        store.put("account", [(b"a", {"x": 4.0})])
        assert store.lookup(Lookup("account", [b"a"], ("x",), (0.0,))).values[0, 0] == 4.0
        wrong = EntityFeatureStore.from_settings(RedisSettings(url=url, password="wrong"))
        refused = wrong.lookup(Lookup("account", [b"a"], ("x",), (0.0,)))
        assert refused.error is not None and "Authentication" in refused.error
    finally:
        devstack.stop_server(server)


def test_tls_from_the_settings_carries_over(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    settings = RedisSettings(url=f"rediss://127.0.0.1:{port}/0", password="pw", ssl_ca_certs=str(ca))
    store = EntityFeatureStore.from_settings(settings, timeout_s=0.5)
    store.put("account", [(b"t", {"x": 8.0})])
    result = store.lookup(Lookup("account", [b"t", b"u"], ("x",), (0.0,)))
    assert result.error is None and result.values[:, 0].tolist() == [8.0, 0.0]


# ---------------------------------------------------------------------------------------------- CLI


def test_features_load_and_get_through_the_cli(redis_server: devstack.ServerInfo, tmp_path: Path) -> None:
    prefix = f"cli{uuid.uuid4().hex[:6]}"
    config = tmp_path / "streamer.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.address}"\nkey_prefix = "{prefix}"\n')
    nested = tmp_path / "accounts.jsonl"
    nested.write_text(
        '{"key": "a1", "features": {"txn_count_24h": 3, "avg_amount_30d": 12.5}}\n'
        "\n"
        '{"key": 42, "features": {"txn_count_24h": 7}, "note": "ignored"}\n'
    )
    loaded = run(["--config", str(config), "features", "load", "account", str(nested), "--ttl-s", "600"], tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 2 account entities" in loaded.stdout
    flat = tmp_path / "merchants.jsonl"
    flat.write_text('{"merchant_id": "m1", "risk": 0.75, "age_days": 30}\n')
    loaded = run(
        ["--config", str(config), "features", "load", "merchant", str(flat), "--key-field", "merchant_id"], tmp_path
    )
    assert loaded.returncode == 0 and "loaded 1 merchant" in loaded.stdout, loaded.stderr

    got = run(["--config", str(config), "features", "get", "account", "a1"], tmp_path)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"txn_count_24h": 3.0, "avg_amount_30d": 12.5}
    got = run(["--config", str(config), "features", "get", "merchant", "m1"], tmp_path)
    assert json.loads(got.stdout) == {"risk": 0.75, "age_days": 30.0}

    client = redis.Redis.from_url(redis_server.address)
    assert 0 < client.ttl(f"{prefix}:entity:account:42") <= 600
    store = EntityFeatureStore(client, prefix=prefix)
    result = store.lookup(Lookup("account", [feature_key(42.0), b"a1"], ("txn_count_24h", "avg_amount_30d"), (0, -1)))
    np.testing.assert_array_equal(result.values, [[7.0, -1.0], [3.0, 12.5]])
    assert result.field_misses == 1

    missing = run(["--config", str(config), "features", "get", "account", "nobody"], tmp_path)
    assert missing.returncode == 1 and "no account entity 'nobody'" in missing.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "accounts.jsonl:2: not JSON"),
        ('{"id": "a"}', "accounts.jsonl:2: not an object with a 'key' field"),
        ('{"key": "b", "features": {"x": "high"}}', "accounts.jsonl:2: feature 'x' is \"high\", not a finite number"),
        ('{"key": "b", "x": true}', "accounts.jsonl:2: feature 'x' is true"),
        ('{"key": "b"}', "accounts.jsonl:2: no features"),
    ],
)
def test_features_load_refuses_a_bad_line_in_one_line(
    redis_server: devstack.ServerInfo, tmp_path: Path, line: str, message: str
) -> None:
    data = tmp_path / "accounts.jsonl"
    data.write_text('{"key": "a", "x": 1}\n' + line + "\n")
    result = run(["features", "load", "account", str(data)], tmp_path, STREAMER_REDIS_URL=redis_server.address)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_features_commands_with_redis_down_fail_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "accounts.jsonl"
    data.write_text('{"key": "a", "x": 1}\n')
    url = f"redis://127.0.0.1:{devstack.free_port()}/0"
    for args in (["features", "load", "account", str(data)], ["features", "get", "account", "a"]):
        result = run(args, tmp_path, STREAMER_REDIS_URL=url)
        assert result.returncode == 2, result.stderr
        assert "Redis" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
