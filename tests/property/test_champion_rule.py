"""The champion rule (``core.routing.champion``) and what a catalog says it serves, on random policies: the one
rule the serving modes, ``models list`` and the lifecycle commands share."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.rollout import ControlState, effective_serving
from streamer.core.routing import Catalog, Serving, champion

versions = st.sets(st.integers(1, 9), max_size=6)
pins = st.none() | st.integers(0, 10)


def card(name: str, version: int) -> ModelCard:
    return ModelCard(name, version, "regression", ("a",), "x", "0" * 64, OutputRef("y"), None)


@given(versions, pins)
def test_the_champion_is_the_pin_when_loaded_else_the_highest(loaded: set[int], pin: int | None) -> None:
    chosen = champion(loaded, pin)
    if not loaded:
        assert chosen is None
    elif pin in loaded:
        assert chosen == pin
    else:
        assert chosen == max(loaded)


policies = st.builds(
    Serving,
    pin=pins,
    canary=st.lists(st.tuples(st.integers(1, 9), st.floats(0.01, 1.0)), max_size=3, unique_by=lambda c: c[0]).map(
        lambda pairs: tuple(sorted(pairs))
    ),
    shadow=st.none() | st.integers(1, 9),
)


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), versions.filter(bool), min_size=1), st.data())
def test_a_catalog_serves_its_champion_and_shares_add_up_per_model(loaded: dict[str, set[int]], data) -> None:
    serving = {name: data.draw(policies) for name in loaded}
    catalog = Catalog({n: {v: card(n, v) for v in vs} for n, vs in loaded.items()}, serving=serving)
    for name, vs in loaded.items():
        assert catalog.serving_version(name) == champion(vs, serving[name].pin)
    assert {(n, v) for n, v, is_champion in catalog.loaded() if is_champion} == {
        (n, catalog.serving_version(n)) for n in loaded
    }
    answering: dict[str, float] = defaultdict(float)
    for name, version, role, share in catalog.shares():
        assert version in loaded[name]
        if role == "shadow":
            assert share == 1.0 and version != catalog.serving_version(name)
        else:
            answering[name] += share
            assert (role == "champion") == (version == catalog.serving_version(name))
    assert set(answering) == set(loaded) and all(abs(total - 1.0) < 1e-9 for total in answering.values())


@given(st.dictionaries(st.sampled_from(["a", "b"]), pins), st.dictionaries(st.sampled_from(["a", "c"]), pins))
def test_a_stored_control_state_wins_over_the_configuration(configured: dict, stored: dict) -> None:
    policy = effective_serving(
        {n: Serving(pin=p) for n, p in configured.items()},
        {n: ControlState(pin=p, generation=1) for n, p in stored.items()},
    )
    for name in set(configured) | set(stored):
        assert policy[name].pin == (stored[name] if name in stored else configured[name])
