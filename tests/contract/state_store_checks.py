"""The checks every learning/evaluation state store passes (``core.state.StateStore``), written once.

Each check takes a ``Harness``: ``make(**options)`` builds a fresh, empty store (keyword arguments as
``MemoryStateStore``/``RedisStateStore`` take them: ``windows``, ``prediction_ttl_s``), safe to share between
threads; ``pass_time(seconds)`` lets that much time pass on the store's own clock (event claims expire on it).
``CHECKS`` lists them; ``tests/contract/test_state_stores.py`` runs each against the in-memory and the Redis store.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.core import learner
from streamer.core.evaluation import WindowSpec
from streamer.core.learner import FtrlParams
from streamer.core.state import (
    DUPLICATE,
    JOINED,
    LEARNED,
    REREAD,
    UNKNOWN,
    LoggedBatch,
    LoggedPrediction,
    OnlineSpec,
    StateStore,
)
from tests.rolling_evaluation import RollingEvaluation

WINDOWS = (WindowSpec("1m", 60, 6), WindowSpec("1h", 3600, 12))
DAY = 86400.0
NOW = 100 * DAY + 4321.5  # an arbitrary moment, the same in every check


@dataclass(frozen=True)
class Harness:
    make: Callable[..., StateStore]
    pass_time: Callable[[float], None]


Check = Callable[[Harness], None]


def _store(h: Harness, **options: Any) -> StateStore:
    options.setdefault("windows", WINDOWS)
    return h.make(**options)


def _predictions(n: int, seed: int, at: float, model: str = "fraud", version: str = "1") -> list[LoggedPrediction]:
    scores = np.random.default_rng(seed).random(n)
    return [LoggedPrediction(f"r-{seed}-{i}", model, version, float(s), 0.5, at) for i, s in enumerate(scores)]


def _labels(logged: list[LoggedPrediction], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    return (rng.random(len(logged)) < np.array([p.score for p in logged])).astype(int)


def _assert_metrics(store: StateStore, model: str, version: str, reference: RollingEvaluation, now: float) -> None:
    for window in WINDOWS:
        got, expected = store.metrics(model, version, window, now), reference.get(now, window)
        assert got.count == expected.count, (window.name, got.count, expected.count)
        for name in ("accuracy", "log_loss", "precision", "recall", "auc", "rmse"):
            a, b = getattr(got, name), getattr(expected, name)
            assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), name


def check_declares_the_protocol(h: Harness) -> None:
    assert StateStore in type(_store(h)).__mro__


def check_logging_returns_counts_and_empty_calls_do_nothing(h: Harness) -> None:
    store = _store(h)
    assert store.log_predictions([]) == 0 and store.log_batches([]) == 0 and store.log_packed([]) == 0
    assert store.apply_labels([], NOW) == []
    assert store.log_predictions(_predictions(3, seed=1, at=NOW)) == 3
    batch = LoggedBatch("fraud", "1", 0.5, NOW, ["b-1", "b-2"], [0.2, 0.9])
    empty = LoggedBatch("fraud", "1", 0.5, NOW, [], [])
    assert store.log_batches([batch, empty]) == 2
    assert store.log_packed([batch.pack(), batch.pack()]) == 4  # logging again overwrites, and counts


def check_labels_join_their_predictions_with_the_reference_maths(h: Harness) -> None:
    store = _store(h)
    logged = _predictions(300, seed=2, at=NOW - 3 * DAY)  # three days before: within the default 7-day TTL
    labels = _labels(logged, seed=2)
    store.log_predictions(logged)
    assert store.apply_labels([(p.id, y) for p, y in zip(logged, labels, strict=True)], NOW) == [JOINED] * 300
    reference = RollingEvaluation(WINDOWS)
    reference.update(NOW, np.array([p.score for p in logged]), labels)
    _assert_metrics(store, "fraud", "1", reference, NOW)
    assert store.metrics("fraud", "2", WINDOWS[0], NOW).count == 0  # another version saw nothing


def check_a_label_counts_once_and_an_unknown_id_is_reported(h: Harness) -> None:
    store = _store(h)
    logged = _predictions(20, seed=3, at=NOW - 60)
    store.log_predictions(logged)
    batch = [(p.id, 1.0) for p in logged]
    assert store.apply_labels(batch, NOW) == [JOINED] * 20
    assert store.apply_labels([*batch, ("never-predicted", 1.0)], NOW) == [DUPLICATE] * 20 + [UNKNOWN]
    assert store.metrics("fraud", "1", WINDOWS[0], NOW).count == 20


def check_the_same_record_again_is_a_reread_and_another_record_a_duplicate(h: Harness) -> None:
    store = _store(h)
    logged = _predictions(4, seed=4, at=NOW - 60)
    store.log_predictions(logged)
    first = [(p.id, 1.0, f"feedback:0:{k}") for k, p in enumerate(logged)]
    assert store.apply_labels(first, NOW) == [JOINED] * 4
    again = [first[0], first[1], (logged[2].id, 1.0, "feedback:1:7"), (logged[3].id, 1.0)]
    assert store.apply_labels(again, NOW) == [REREAD, REREAD, DUPLICATE, DUPLICATE]  # no source: cannot tell
    assert store.apply_labels([first[2]], NOW) == [REREAD]  # the marker still names the first record
    fresh = _predictions(1, seed=5, at=NOW - 60)
    store.log_predictions(fresh)
    twice = [(fresh[0].id, 0.0, "feedback:2:0"), (fresh[0].id, 0.0, "feedback:2:0")]
    assert store.apply_labels(twice, NOW) == [JOINED, REREAD]  # within one call, in order
    assert store.metrics("fraud", "1", WINDOWS[0], NOW).count == 5


def check_an_unknown_label_joins_once_its_prediction_is_logged(h: Harness) -> None:
    store = _store(h)
    [early] = _predictions(1, seed=6, at=NOW - 5)
    assert store.apply_labels([(early.id, 1.0, "feedback:0:0")], NOW) == [UNKNOWN]
    store.log_predictions([early])
    assert store.apply_labels([(early.id, 1.0, "feedback:0:0")], NOW) == [JOINED]  # nothing kept by the miss


def check_a_prediction_older_than_the_ttl_is_unknown(h: Harness) -> None:
    store = _store(h, prediction_ttl_s=3600)
    old, recent = _predictions(1, seed=7, at=NOW - 3601), _predictions(1, seed=8, at=NOW - 3599)
    store.log_predictions(old + recent)
    assert store.apply_labels([(old[0].id, 1.0), (recent[0].id, 1.0)], NOW) == [UNKNOWN, JOINED]


def check_a_challenger_is_evaluated_by_its_champions_labels(h: Harness) -> None:
    store = _store(h)
    champion = LoggedBatch("fraud", "1", 0.5, NOW - 10, ["s-1", "s-2"], [0.9, 0.2])
    challenger = LoggedBatch("fraud", "2", 0.5, NOW - 10, ["s-1", "s-2", "s-3"], [0.8, 0.7, 0.6], shadow=True)
    assert store.log_batches([champion, challenger]) == 5
    assert store.apply_labels([("s-1", 1.0), ("s-2", 0.0), ("s-3", 1.0)], NOW) == [JOINED, JOINED, UNKNOWN]
    for version, scores in (("1", [0.9, 0.2]), ("2", [0.8, 0.7])):
        reference = RollingEvaluation(WINDOWS)
        reference.update(NOW, np.array(scores), np.array([1, 0]))
        _assert_metrics(store, "fraud", version, reference, NOW)


def check_windows_see_only_their_buckets(h: Harness) -> None:
    store = _store(h)
    logged = _predictions(10, seed=9, at=NOW - 30)
    store.log_predictions(logged)
    store.apply_labels([(p.id, 1.0) for p in logged], NOW)
    minute, hour = WINDOWS
    assert store.metrics("fraud", "1", minute, NOW + 30).count == 10
    assert store.metrics("fraud", "1", minute, NOW + 61).count == 0  # out of the 1-minute window
    assert store.metrics("fraud", "1", hour, NOW + 61).count == 10
    assert store.metrics("fraud", "1", minute, NOW - 3600).count == 0  # a window that ended before
    assert store.window_stats("fraud", "1", hour, NOW).shape == (len(store.window_stats("x", "1", hour, NOW)),)


def check_concurrent_callers_never_lose_or_double_a_label(h: Harness) -> None:
    store = _store(h)
    logged = _predictions(400, seed=10, at=NOW - 60)
    store.log_predictions(logged)
    ids = [p.id for p in logged]
    chunks = [[(i, 1.0) for i in ids[k::4]] + [(i, 1.0) for i in ids[:50]] for k in range(4)]  # overlapping
    start = threading.Barrier(4)

    def apply(chunk: list[tuple[str, float]]) -> list[tuple[str, int]]:
        start.wait(timeout=10)
        return list(zip([i for i, _ in chunk], store.apply_labels(chunk, NOW), strict=True))

    with ThreadPoolExecutor(4) as pool:
        results = [pair for pairs in pool.map(apply, chunks) for pair in pairs]
    joined = [i for i, code in results if code == JOINED]
    assert sorted(joined) == sorted(ids)  # every id joined exactly once, whoever got there first
    assert all(code == DUPLICATE for _, code in results if code != JOINED)
    assert store.metrics("fraud", "1", WINDOWS[0], NOW).count == 400


def _online_spec(d: int) -> OnlineSpec:
    rng = np.random.default_rng(d)
    return OnlineSpec(FtrlParams(alpha=0.2, beta=1.0, l1=0.01, l2=0.5), rng.normal(0, 1, d), rng.uniform(0.5, 2, d))


def check_online_models_learn_each_label_once_as_the_reference_learner(h: Harness) -> None:
    store = _store(h)
    d = 3
    spec = _online_spec(d)
    start = learner.from_weights(np.array([0.3, -0.2, 0.1]), -0.05, spec.mean, spec.scale, spec.params)
    assert store.online_weights("live", "1") is None
    assert store.register_online("other", "4", _online_spec(2), np.zeros(3), np.zeros(3)) is True
    assert store.register_online("live", "1", spec, start.z, start.n) is True
    assert store.register_online("live", "1", spec, np.zeros(d + 1), np.zeros(d + 1)) is False  # kept, not reset
    rng = np.random.default_rng(11)
    x = rng.normal(0, 2, (40, d))
    y = (rng.random(40) < 0.5).astype(int)
    ids = [f"o-{i}" for i in range(40)]
    store.log_batches([LoggedBatch("live", "1", 0.5, NOW - 60, ids, [0.5] * 40, x)])
    store.log_predictions([LoggedPrediction("plain-1", "live", "1", 0.4, 0.5, NOW - 60)])  # logged without features
    codes = store.apply_labels([*zip(ids[:25], y[:25].tolist(), strict=True), ("plain-1", 1.0)], NOW)
    assert codes == [LEARNED + 1] * 25 + [JOINED]  # the second registered model; no features: joins, no learning
    assert store.learner_of(LEARNED + 1) == ("live", "1") and store.learner_of(LEARNED) == ("other", "4")
    assert store.apply_labels([(i, 1.0) for i in ids[:25]], NOW) == [DUPLICATE] * 25  # a replay never learns
    assert store.apply_labels(list(zip(ids[25:], y[25:].tolist(), strict=True)), NOW) == [LEARNED + 1] * 15
    expected = learner.learn_many(start, x, y)
    shared = store.online_weights("live", "1")
    assert shared is not None and shared.updates == 40
    np.testing.assert_allclose(shared.z, expected.z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(shared.n, expected.n, rtol=1e-9, atol=1e-12)
    assert store.metrics("live", "1", WINDOWS[0], NOW).count == 41


def check_a_state_of_another_width_is_not_learnt(h: Harness) -> None:
    store = _store(h)
    store.register_online("wide", "1", _online_spec(2), np.zeros(3), np.zeros(3))  # a 2-feature state ...
    store.register_online("wide", "1", _online_spec(4), np.zeros(5), np.zeros(5))  # ... kept for a 4-feature model
    store.log_batches([LoggedBatch("wide", "1", 0.5, NOW - 1, ["w-1"], [0.5], np.ones((1, 4)))])
    assert store.apply_labels([("w-1", 1.0)], NOW) == [JOINED]
    shared = store.online_weights("wide", "1")
    assert shared is not None and shared.updates == 0 and shared.z.shape == (3,)


def check_an_event_is_claimed_once_per_quiet_period(h: Harness) -> None:
    store = _store(h)
    assert store.claim_event("accuracy-below-floor", "fraud", "1", 1) is True
    assert store.claim_event("accuracy-below-floor", "fraud", "1", 1) is False
    assert store.claim_event("accuracy-recovered", "fraud", "1", 1) is True
    assert store.claim_event("accuracy-below-floor", "fraud", "2", 1) is True
    h.pass_time(1.2)
    assert store.claim_event("accuracy-below-floor", "fraud", "1", 1) is True


CHECKS: tuple[Check, ...] = (
    check_declares_the_protocol,
    check_logging_returns_counts_and_empty_calls_do_nothing,
    check_labels_join_their_predictions_with_the_reference_maths,
    check_a_label_counts_once_and_an_unknown_id_is_reported,
    check_the_same_record_again_is_a_reread_and_another_record_a_duplicate,
    check_an_unknown_label_joins_once_its_prediction_is_logged,
    check_a_prediction_older_than_the_ttl_is_unknown,
    check_a_challenger_is_evaluated_by_its_champions_labels,
    check_windows_see_only_their_buckets,
    check_concurrent_callers_never_lose_or_double_a_label,
    check_online_models_learn_each_label_once_as_the_reference_learner,
    check_a_state_of_another_width_is_not_learnt,
    check_an_event_is_claimed_once_per_quiet_period,
)
