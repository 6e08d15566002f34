"""The shared state of the model lifecycle against a real redis-server: a challenger's predictions evaluated on
the champion's labels, the control channel's compare-and-set, and rollouts decided on labels by two deciders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamer.adapters import devstack
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.redis_control import ControlChannel
from streamer.adapters.redis_state import JOINED, LoggedBatch, RedisStateStore
from streamer.core import rollout
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.evaluation import WindowSpec, parse_windows
from streamer.core.rollout import ControlState, RolloutPolicy
from streamer.core.routing import Catalog
from streamer.services.rollout import Rollouts
from streamer.services.serving_control import ServingControl
from streamer.serving import ModelSet, ServingModels
from tests.model_versions import GBDT, write_version
from tests.rolling_evaluation import RollingEvaluation

WINDOWS = (WindowSpec("1m", 60, 6),)
CARD = ModelCard(
    "fraud", 1, "binary-classification", ("a",), "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label")
)


@pytest.fixture
def store(redis_server: devstack.ServerInfo) -> RedisStateStore:
    return RedisStateStore.from_url(redis_server.address, windows=WINDOWS, prefix=f"t{uuid.uuid4().hex[:8]}")


def log_pair(store: RedisStateStore, n: int, now: float, champion_skill: float, challenger_skill: float, seed: int):
    """n labelled requests scored by version 1 (champion) and version 2 (shadow) with given accuracy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    ids = [f"r{seed}-{i}" for i in range(n)]

    def scores(skill: float) -> list[float]:
        right = rng.random(n) < skill
        return np.where(right == (labels == 1), 0.9, 0.1).tolist()

    champion, challenger = scores(champion_skill), scores(challenger_skill)
    store.log_batches(
        [
            LoggedBatch("fraud", "1", 0.5, now, ids, champion),
            LoggedBatch("fraud", "2", 0.5, now, ids, challenger, shadow=True),
        ]
    )
    return ids, labels, np.array(champion), np.array(challenger)


def test_one_label_evaluates_the_champion_and_its_shadow(store: RedisStateStore) -> None:
    now = 1_000_000.0
    ids, labels, champion, challenger = log_pair(store, 400, now, 0.7, 0.9, seed=1)
    codes = store.apply_labels([(i, int(y)) for i, y in zip(ids, labels, strict=True)], now)
    assert codes == [JOINED] * 400  # one outcome per label, whatever shadows it has
    for version, scores in (("1", champion), ("2", challenger)):
        reference = RollingEvaluation(WINDOWS)
        reference.update(now, scores, labels)
        got = store.metrics("fraud", version, WINDOWS[0], now)
        want = reference.get(now, WINDOWS[0])
        assert got.count == 400 and abs(got.accuracy - want.accuracy) < 1e-12
        assert abs(got.log_loss - want.log_loss) < 1e-9


def test_the_control_channel_makes_one_decision_among_racing_writers(store: RedisStateStore) -> None:
    channel = ControlChannel(store.client, store.prefix)
    barrier = threading.Barrier(8)
    won: list[int] = []

    def race(version: int) -> None:
        before = channel.state("fraud")
        barrier.wait()
        if channel.replace("fraud", before, rollout.pinned(before, version, f"pin {version}")):
            won.append(version)

    threads = [threading.Thread(target=race, args=(v,)) for v in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    state = channel.state("fraud")
    assert state.pin == won[0] and state.generation == 1
    before, after = channel.update("fraud", lambda s: rollout.pinned(s, 3, "again"))  # type: ignore[misc]
    assert (before.generation, after.generation) == (1, 2) and channel.read()["fraud"] == after


def serving_models(versions: tuple[int, ...]) -> ServingModels:
    cards = {"fraud": {v: replace(CARD, version=v) for v in versions}}
    return ServingModels(ModelSet(Catalog(cards), OnnxScorer()))


@pytest.mark.parametrize(("challenger_skill", "decision"), [(0.95, "model-promoted"), (0.55, "model-rolled-back")])
def test_two_workers_decide_a_rollout_once_on_labels(
    store: RedisStateStore, challenger_skill: float, decision: str
) -> None:
    policy = RolloutPolicy(enabled=True, stage="shadow", window="1m", min_labels=300, promote_margin=0.02)
    channel = ControlChannel(store.client, store.prefix)
    events: list[tuple] = []
    workers = []
    for _ in range(2):
        serving = serving_models((1,))
        control = ServingControl(channel, serving, {}, observer=None)
        emit = lambda kind, name, version, **fields: events.append((kind, name, version, fields))  # noqa: E731
        rollouts = Rollouts(channel, store, serving, {"fraud": policy}, emit, control.apply_once, None)
        workers.append((serving, control, rollouts))
    for _, _, rollouts in workers:
        assert rollouts.check("fraud", policy) in ("rollout-champion", None)
    assert channel.state("fraud").pin == 1
    for serving, _, _ in workers:  # version 2 dropped in: both workers see it
        cards = {"fraud": {1: CARD, 2: replace(CARD, version=2)}}
        serving.current = ModelSet(serving.current.catalog.with_cards(cards), serving.current.scorer)
    started = [rollouts.check("fraud", policy) for _, _, rollouts in workers]
    assert sorted(map(str, started)) == ["None", "rollout-started"]
    for serving, control, _ in workers:
        control.apply_once()
        assert (
            serving.current.catalog.shadow_of(CARD) is not None
            and serving.current.catalog.serving_version("fraud") == 1
        )
    now = time.time()
    ids, labels, _, _ = log_pair(store, 400, now, 0.8, challenger_skill, seed=7)
    assert all(r.check("fraud", policy, now) is None for _, _, r in workers)  # no labels yet: no verdict
    store.apply_labels([(i, int(y)) for i, y in zip(ids, labels, strict=True)], now)
    decided = [rollouts.check("fraud", policy, now) for _, _, rollouts in workers]
    assert decided.count(decision) == 1, decided
    kinds = [e[0] for e in events]
    assert kinds.count(decision) == 1 and kinds.count("rollout-started") == 1
    figures = next(e[3] for e in events if e[0] == decision)
    assert figures["candidate_labels"] == 400 and figures["champion_labels"] == 400
    # ``champion`` is the champion after each change, ``champion_before`` the one before it
    champions = [(e[0], e[3]["champion_before"], e[3]["champion"]) for e in events]
    assert champions == [
        ("rollout-champion", 1, 1),
        ("rollout-started", 1, 1),
        (decision, 1, 2 if decision == "model-promoted" else 1),
    ]
    state = channel.state("fraud")
    for serving, control, _ in workers:
        control.apply_once()
        catalog = serving.current.catalog
        assert catalog.shadow_of(catalog.cards["fraud"][1]) is None
        assert catalog.serving_version("fraud") == (2 if decision == "model-promoted" else 1)
    if decision == "model-rolled-back":
        assert state.rolled_back == (2,)
        assert all(r.check("fraud", policy, now) is None for _, _, r in workers)  # never tried again by itself
    assert isinstance(state, ControlState) and state.generation == 3


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | env
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args], env=environ, capture_output=True, text=True, timeout=60
    )


def test_compare_and_rollback_commands_read_and_write_the_shared_state(
    store: RedisStateStore, redis_server: devstack.ServerInfo, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    for version in (1, 2):
        write_version(models, "fraud", version, GBDT)
    (tmp_path / "streamer.toml").write_text(
        f'[redis]\nkey_prefix = "{store.prefix}"\n[evaluation]\nwindows = "1m"\nfloor_window = "1m"\n'
    )
    env = {
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_CONFIG": str(tmp_path / "streamer.toml"),
    }
    store = RedisStateStore(store.client, windows=parse_windows("1m"), prefix=store.prefix)  # as the CLI reads it
    now = time.time()
    ids, labels, _, _ = log_pair(store, 200, now, 0.6, 0.9, seed=3)
    store.apply_labels([(i, int(y)) for i, y in zip(ids, labels, strict=True)], now)
    assert run_cli(["models", "pin", "fraud", "1"], env).returncode == 0
    shadow = run_cli(["models", "shadow", "fraud", "2"], env)
    assert shadow.returncode == 0 and "shadow 2" in shadow.stdout
    result = run_cli(["models", "compare", "fraud", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = {(r["version"], r["role"]): r for r in json.loads(result.stdout)}
    assert set(rows) == {(1, "champion"), (2, "challenger")}
    assert rows[(1, "champion")]["labels"] == rows[(2, "challenger")]["labels"] == 200
    assert rows[(2, "challenger")]["accuracy"] > rows[(1, "champion")]["accuracy"]
    table = run_cli(["models", "compare", "fraud"], env)
    assert "champion" in table.stdout and "challenger" in table.stdout
    assert run_cli(["models", "rollback", "fraud"], env).returncode == 0
    state = ControlChannel(store.client, store.prefix).state("fraud")
    assert state.pin == 1 and state.shadow is None and state.rolled_back == (2,) and state.generation == 3
    listed = json.loads(run_cli(["models", "list", "--json"], env).stdout)
    assert [(r["version"], r["status"]) for r in listed] == [(1, "serving"), (2, "loaded")]  # the shared pin wins
    refused = run_cli(["models", "promote", "fraud", "7"], env)
    assert refused.returncode == 2 and "no version 7" in refused.stderr and "Traceback" not in refused.stderr


def test_a_canary_or_shadow_without_a_pinned_champion_is_refused_with_the_pin_to_run(
    store: RedisStateStore, redis_server: devstack.ServerInfo, tmp_path: Path
) -> None:
    """Unpinned, version 3 already serves every key as the highest: trying it would try nothing, and a version
    dropped in later would take over. The command names the pin; after it, the trial starts on that pin."""
    models = tmp_path / "models"
    for version in (1, 2, 3):
        write_version(models, "fraud", version, GBDT)
    (tmp_path / "streamer.toml").write_text(f'[redis]\nkey_prefix = "{store.prefix}"\n')
    env = {
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_CONFIG": str(tmp_path / "streamer.toml"),
    }
    channel = ControlChannel(store.client, store.prefix)
    for args in (["canary", "fraud", "3", "--weight", "0.2"], ["shadow", "fraud", "3"]):
        refused = run_cli(["models", *args], env)
        assert refused.returncode == 2, refused.stderr
        assert "no pinned champion" in refused.stderr and "`streamer models pin fraud 2`" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert channel.state("fraud").generation == 0, "nothing written"
    assert run_cli(["models", "pin", "fraud", "2"], env).returncode == 0
    itself = run_cli(["models", "shadow", "fraud", "2"], env)
    assert itself.returncode == 2 and "is the pinned champion" in itself.stderr
    started = run_cli(["models", "canary", "fraud", "3", "--weight", "0.2"], env)
    assert started.returncode == 0, started.stderr
    state = channel.state("fraud")
    assert (state.pin, state.canary, state.generation) == (2, ((3, 0.2),), 2)
    configured = {**env, "STREAMER_CONFIG": str(tmp_path / "pinned.toml")}
    (tmp_path / "pinned.toml").write_text(
        f'[redis]\nkey_prefix = "{store.prefix}-cfg"\n[models]\npins = {{ fraud = 1 }}\n'
    )
    shadow = run_cli(["models", "shadow", "fraud", "3"], configured)  # a [models] pin counts: pinned in the state
    assert shadow.returncode == 0, shadow.stderr
    pinned = ControlChannel(store.client, f"{store.prefix}-cfg").state("fraud")
    assert (pinned.pin, pinned.shadow, pinned.generation) == (1, 3, 1)
