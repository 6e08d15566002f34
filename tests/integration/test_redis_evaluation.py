"""The rolling-evaluation maths of the label script (Lua, inside a real redis-server) equal the core's.

``RedisStateStore.apply_labels`` computes each label's statistics in Lua (``redis_state_scripts.LUA_STATS``);
``MemoryStateStore`` applies labels with ``core.evaluation.stats_of``. The same random stream -- predictions of
two versions with their own thresholds and a challenger in shadow, scores on and between the histogram bins and
the thresholds and outside [0, 1], labels 0/1 and regression values, unknown ids, labels sent twice, calls at
times that cross bucket and window boundaries -- goes through both; every call must return the same codes and
every window the same statistics vector at every call's time, hence the same metrics.
"""

from __future__ import annotations

import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.adapters import devstack
from streamer.adapters.redis_state import RedisStateStore
from streamer.core.evaluation import SCORE_BINS, STATS_SIZE, WindowSpec
from streamer.core.state import LoggedBatch
from tests.memory_state_store import MemoryStateStore

WINDOWS = (WindowSpec("1m", 60, 6), WindowSpec("10m", 600, 4))
T0 = 500 * 86400.0 + 43_210.0  # mid-day: the predictions and labels below stay within one or two days
VERSIONS = {("fraud", "1"): 0.5, ("fraud", "2"): 0.3}  # threshold per version
CHALLENGER = ("fraud", "3", 0.8)

edge_scores = st.sampled_from([0.0, 1.0, 0.5, 0.3, 0.8, *(k / SCORE_BINS for k in range(SCORE_BINS + 1))])
scores = edge_scores | st.floats(-0.5, 1.5, allow_nan=False)
labels = st.sampled_from([0, 1, 0.0, 1.0, 0.49, 0.5, 2.5, -1.0])
prediction = st.tuples(st.sampled_from(sorted(VERSIONS)), scores, st.none() | scores, st.floats(0, 3600))
label = st.tuples(st.integers(-1, 24), labels, st.sampled_from(["", "feedback:0:1", "feedback:1:2"]))
calls = st.lists(st.tuples(st.floats(0, 2000), st.lists(label, max_size=12)), min_size=1, max_size=4)


def stores(redis_server: devstack.ServerInfo) -> tuple[RedisStateStore, MemoryStateStore]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return RedisStateStore.from_url(redis_server.address, windows=WINDOWS, prefix=prefix), MemoryStateStore(WINDOWS)


def logged_batches(predictions: list[tuple]) -> list[LoggedBatch]:
    """One batch per prediction (its own logging time); a shadow score logs the challenger's beside it."""
    batches = []
    for i, ((model, version), score, shadow, ago_s) in enumerate(predictions):
        at = T0 - ago_s
        batches.append(LoggedBatch(model, version, VERSIONS[(model, version)], at, [f"r{i}"], [score]))
        if shadow is not None:
            name, challenger, threshold = CHALLENGER
            batches.append(LoggedBatch(name, challenger, threshold, at, [f"r{i}"], [shadow], shadow=True))
    return batches


def assert_same_stats(got: np.ndarray, want: np.ndarray, where: str) -> None:
    assert got.shape == want.shape == (STATS_SIZE,)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-9), f"{where}\nlua:  {got.tolist()}\ncore: {want.tolist()}"


@settings(max_examples=60)
@given(predictions=st.lists(prediction, min_size=1, max_size=25), calls=calls)
def test_the_label_script_adds_the_statistics_the_core_computes(
    redis_server: devstack.ServerInfo, predictions: list[tuple], calls: list[tuple[float, list[tuple]]]
) -> None:
    lua, core = stores(redis_server)
    batches = logged_batches(predictions)
    assert lua.log_batches(batches) == core.log_batches(batches)
    nows = []
    for after_s, entries in sorted(calls, key=lambda call: call[0]):
        now = T0 + after_s
        nows.append(now)
        # index -1 (or past the predictions): an id nobody predicted
        stream = [(f"r{i}" if 0 <= i < len(predictions) else "never", y, source) for i, y, source in entries]
        assert lua.apply_labels(stream, now) == core.apply_labels(stream, now), stream
    versions = [*VERSIONS, CHALLENGER[:2]]
    for now in nows:
        for model, version in versions:
            for window in WINDOWS:
                got = lua.window_stats(model, version, window, now)
                want = core.window_stats(model, version, window, now)
                assert_same_stats(got, want, f"{model}@{version} {window.name} at {now - T0:+.1f}s")
