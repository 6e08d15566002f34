"""Rollout transitions and verdicts (``core.rollout``) against their stated invariants and a naive judge."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer.core import rollout
from streamer.core.evaluation import Metrics
from streamer.core.rollout import ControlState, RolloutPolicy

versions = st.integers(1, 9)
states = st.builds(
    ControlState,
    pin=st.none() | versions,
    canary=st.lists(st.tuples(versions, st.floats(0.01, 1.0)), max_size=2, unique_by=lambda p: p[0]).map(
        lambda c: tuple(sorted(c))
    ),  # sorted by version: the canonical form
    shadow=st.none() | versions,
    previous=st.none() | versions,
    rolled_back=st.lists(versions, max_size=3, unique=True).map(lambda v: tuple(sorted(v))),
    generation=st.integers(0, 1000),
)
policies = st.builds(
    RolloutPolicy,
    enabled=st.just(True),
    stage=st.sampled_from(rollout.STAGES),
    canary_weight=st.floats(0.01, 0.99),
    metric=st.sampled_from(rollout.METRICS),
    min_labels=st.integers(1, 1000),
    promote_margin=st.floats(0, 0.2),
    rollback_margin=st.floats(0, 0.2),
)


@given(state=states, version=versions, champion=versions, policy=policies)
def test_every_transition_is_one_generation_and_keeps_its_promise(
    state: ControlState, version: int, champion: int, policy: RolloutPolicy
) -> None:
    promoted = rollout.promote(state, version, champion, "r")
    assert promoted.generation == state.generation + 1
    assert promoted.pin == version and promoted.candidate is None and version not in promoted.rolled_back
    back = rollout.rollback(state, champion, "r")
    assert back.generation == state.generation + 1 and back.candidate is None and back.shadow is None
    if state.candidate is not None:
        assert state.candidate in back.rolled_back and back.pin == champion
    trial = rollout.start_candidate(state, champion, version, policy)
    assert trial.generation == state.generation + 1 and trial.pin == champion
    assert trial.candidate == (version if version != champion else None) or policy.stage == "shadow"
    pinned = rollout.pinned(state, version, "r")
    assert pinned.pin == version and pinned.candidate is None
    for s in (state, promoted, back, trial, pinned):
        assert ControlState.from_json(s.to_json()) == s


@given(state=states, champion=versions, loaded=st.lists(versions, min_size=1, unique=True))
def test_the_next_candidate_is_the_newest_untried_version(
    state: ControlState, champion: int, loaded: list[int]
) -> None:
    chosen = rollout.next_candidate(state, champion, loaded)
    if state.candidate is not None:
        assert chosen is None
        return
    eligible = [v for v in loaded if v > champion and v not in state.rolled_back]
    assert chosen == (max(eligible) if eligible else None)


def metrics(count: int, accuracy: float, log_loss: float) -> Metrics:
    return Metrics(count, accuracy, log_loss, 0.0, 0.0, 0.5, 0.0)


@given(
    policy=policies,
    counts=st.tuples(st.integers(0, 2000), st.integers(0, 2000)),
    accuracy=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    loss=st.tuples(st.floats(0, 5), st.floats(0, 5)),
)
def test_the_verdict_agrees_with_a_naive_judge(
    policy: RolloutPolicy, counts: tuple[int, int], accuracy: tuple[float, float], loss: tuple[float, float]
) -> None:
    champion, candidate = metrics(counts[0], accuracy[0], loss[0]), metrics(counts[1], accuracy[1], loss[1])
    got = rollout.verdict(champion, candidate, policy)
    if min(counts) < policy.min_labels:
        assert got is None
        return
    better = accuracy[1] - accuracy[0] if policy.metric == "accuracy" else loss[0] - loss[1]
    if better > 0 and better >= policy.promote_margin:
        assert got is not None and got.action == "promote"
    elif better < 0 and -better >= policy.rollback_margin:
        assert got is not None and got.action == "rollback"
    else:
        assert got is None
    if got is not None:
        assert got.figures["champion_labels"] == counts[0] and got.figures["candidate_labels"] == counts[1]
