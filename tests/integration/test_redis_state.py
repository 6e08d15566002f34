"""The shared evaluation state against a real redis-server: joins, idempotency, and the reference maths."""

from __future__ import annotations

import math
import threading
import uuid

import numpy as np
import pytest

from streamer.adapters import devstack
from streamer.adapters.redis_state import DUPLICATE, JOINED, REREAD, UNKNOWN, LoggedPrediction, RedisStateStore
from streamer.core.evaluation import WindowSpec
from tests.rolling_evaluation import RollingEvaluation

WINDOWS = (WindowSpec("1m", 60, 6), WindowSpec("1h", 3600, 12))


@pytest.fixture
def store(redis_server: devstack.ServerInfo) -> RedisStateStore:
    return RedisStateStore.from_url(redis_server.address, windows=WINDOWS, prefix=f"t{uuid.uuid4().hex[:8]}")


def predictions(n: int, seed: int, logged_at: float = 1000.0) -> tuple[list[LoggedPrediction], np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    labels = (rng.random(n) < scores).astype(int)
    logged = [LoggedPrediction(f"r-{seed}-{i}", "fraud", "1", float(s), 0.5, logged_at) for i, s in enumerate(scores)]
    return logged, labels


def test_labels_join_their_predictions_and_match_the_reference_maths(store: RedisStateStore) -> None:
    now = 1_000_000.0
    logged, labels = predictions(500, seed=1, logged_at=now - 3 * 86400)  # three days before: within the TTL
    assert store.log_predictions(logged) == 500
    codes = store.apply_labels([(p.id, y) for p, y in zip(logged, labels, strict=True)], now)
    assert codes == [JOINED] * 500
    reference = RollingEvaluation(WINDOWS)
    reference.update(now, np.array([p.score for p in logged]), labels)
    for window in WINDOWS:
        got, expected = store.metrics("fraud", "1", window, now), reference.get(now, window)
        assert got.count == expected.count == 500
        for name in ("accuracy", "log_loss", "precision", "recall", "auc"):
            assert math.isclose(getattr(got, name), getattr(expected, name), rel_tol=1e-9), name


def test_a_label_applied_twice_counts_once_and_unknown_ids_are_reported(store: RedisStateStore) -> None:
    now = 2_000_000.0
    logged, labels = predictions(50, seed=2, logged_at=now - 60)
    store.log_predictions(logged)
    batch = [(p.id, y) for p, y in zip(logged, labels, strict=True)]
    assert store.apply_labels(batch, now) == [JOINED] * 50
    assert store.apply_labels([*batch, ("never-predicted", 1)], now) == [DUPLICATE] * 50 + [UNKNOWN]
    assert store.metrics("fraud", "1", WINDOWS[0], now).count == 50


def test_the_same_label_record_read_again_is_a_reread_and_another_record_a_duplicate(store: RedisStateStore) -> None:
    """The marker keeps the source of the record that applied the label: re-reading that record (an uncommitted
    batch read again) is told apart from the same id arriving in another record (a label sent twice)."""
    now = 3_000_000.0
    logged, labels = predictions(4, seed=8, logged_at=now - 60)
    store.log_predictions(logged)
    first = [(p.id, y, f"feedback:0:{k}") for k, (p, y) in enumerate(zip(logged, labels, strict=True))]
    assert store.apply_labels(first, now) == [JOINED] * 4
    again = [first[0], first[1], (logged[2].id, labels[2], "feedback:1:7"), (logged[3].id, labels[3])]
    assert store.apply_labels(again, now) == [REREAD, REREAD, DUPLICATE, DUPLICATE]  # no source: can't tell
    assert store.apply_labels([first[2]], now) == [REREAD]  # the marker still names the first record
    assert store.metrics("fraud", "1", WINDOWS[0], now).count == 4  # applied once each, whatever the outcome
    in_batch = [(logged[0].id, 1, "feedback:2:0"), (logged[0].id, 1, "feedback:2:0")]
    assert store.apply_labels(in_batch, now) == [DUPLICATE, DUPLICATE]  # first marked by feedback:0:0


def test_markers_without_a_source_and_from_earlier_versions_count_as_duplicates(store: RedisStateStore) -> None:
    now = 3_100_000.0
    logged, labels = predictions(2, seed=9, logged_at=now - 60)
    store.log_predictions(logged)
    assert store.apply_labels([(logged[0].id, labels[0])], now) == [JOINED]  # marker "1", as before sources
    assert store.apply_labels([(logged[0].id, labels[0], "feedback:0:0")], now) == [DUPLICATE]
    store._redis.set(f"{store.prefix}:label:{logged[1].id}", "1")  # what versions before sources wrote
    assert store.apply_labels([(logged[1].id, labels[1], "feedback:0:1")], now) == [DUPLICATE]


def test_a_reread_unknown_label_is_looked_up_again_and_joins_once_its_prediction_is_logged(
    store: RedisStateStore,
) -> None:
    logged, _ = predictions(1, seed=10, logged_at=10.0)
    record = (logged[0].id, 1, "feedback:3:42")
    assert store.apply_labels([record], 10.0) == [UNKNOWN]
    assert store.apply_labels([record], 10.0) == [UNKNOWN]  # still not logged: unknown again, not a re-read
    store.log_predictions(logged)
    assert store.apply_labels([record], 10.0) == [JOINED]
    assert store.apply_labels([record], 10.0) == [REREAD]


def test_a_label_that_arrives_before_its_prediction_joins_when_replayed(store: RedisStateStore) -> None:
    logged, _ = predictions(1, seed=3, logged_at=10.0)
    assert store.apply_labels([(logged[0].id, 1)], 10.0) == [UNKNOWN]
    store.log_predictions(logged)
    assert store.apply_labels([(logged[0].id, 1)], 10.0) == [JOINED]


@pytest.mark.parametrize("age_s", [1.5, 86400 + 5, 3 * 86400])
def test_an_expired_prediction_is_unknown_to_the_second(redis_server: devstack.ServerInfo, age_s: float) -> None:
    """The TTL is checked against the logging time, whichever day's hash holds the prediction."""
    ttl = 1 if age_s < 10 else 86400
    store = RedisStateStore.from_url(
        redis_server.address, windows=WINDOWS, prediction_ttl_s=ttl, prefix=f"exp{uuid.uuid4().hex[:6]}"
    )
    now = 5_000_000.0
    (fresh,), _ = predictions(1, seed=4, logged_at=now - ttl + 0.5)
    (old,), _ = predictions(1, seed=6, logged_at=now - age_s)
    store.log_predictions([fresh, old])
    assert store.apply_labels([(fresh.id, 1), (old.id, 1)], now) == [JOINED, UNKNOWN]


def test_a_days_log_leaves_redis_the_ttl_after_that_day_ends(redis_server: devstack.ServerInfo) -> None:
    prefix = f"expiring{uuid.uuid4().hex[:6]}"
    store = RedisStateStore.from_url(redis_server.address, windows=WINDOWS, prediction_ttl_s=1, prefix=prefix)
    logged, _ = predictions(200, seed=7, logged_at=100 * 86400 - 0.2)  # 0.2 s before its day ends
    store.log_predictions(logged)
    keys = store._redis.keys(f"{prefix}:predlog:*")
    assert 10 < len(keys) <= 64 and all(key.startswith(f"{prefix}:predlog:99:".encode()) for key in keys)
    assert all(0 < store._redis.ttl(key) <= 2 for key in keys)  # 0.2 s left in the day + the 1 s TTL


@pytest.mark.parametrize("sources", [False, True])
def test_two_workers_applying_overlapping_labels_concurrently_count_each_once(
    store: RedisStateStore, sources: bool
) -> None:
    """The overlap is the same records read by both (a rebalance): re-reads when sources are given."""
    logged, labels = predictions(2000, seed=5, logged_at=1_000_000.0)
    store.log_predictions(logged)
    batch: list[tuple[str, int] | tuple[str, int, str]] = [
        (p.id, y, f"feedback:0:{k}") if sources else (p.id, y)
        for k, (p, y) in enumerate(zip(logged, labels, strict=True))
    ]
    now = 1_000_100.0
    results: list[list[int]] = []

    def worker(part: list[tuple[str, int] | tuple[str, int, str]]) -> None:
        codes: list[int] = []
        for start in range(0, len(part), 100):
            codes += store.apply_labels(part[start : start + 100], now)
        results.append(codes)

    threads = [
        threading.Thread(target=worker, args=(batch[:1500],)),
        threading.Thread(target=worker, args=(batch[500:],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    joined = sum(code == JOINED for codes in results for code in codes)
    again = sum(code == (REREAD if sources else DUPLICATE) for codes in results for code in codes)
    assert (joined, again) == (2000, 1000)
    assert store.metrics("fraud", "1", WINDOWS[1], now).count == 2000


def test_predictions_logged_as_hashes_by_earlier_versions_still_join(store: RedisStateStore) -> None:
    """Before 0.2 the log was one hash per prediction; after an upgrade such entries live on for the TTL."""
    client = store._redis
    client.hset(f"{store.prefix}:pred:old-1", mapping={"m": "fraud", "v": "1", "s": "0.9", "th": "0.5", "t": "1"})
    store.log_predictions([LoggedPrediction("new-1", "fraud", "1", 0.2, 0.5, 1.0)])
    assert store.apply_labels([("old-1", 1.0), ("new-1", 0.0), ("none", 1.0)], 1000.0) == [JOINED, JOINED, UNKNOWN]
    stats = store.window_stats("fraud", "1", store.windows[0], 1000.0)
    assert stats[0] == 2 and stats[1] == 2  # both counted, both correct (0.9 >= 0.5 -> 1; 0.2 < 0.5 -> 0)
