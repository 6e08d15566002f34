"""Canary splits, pins and shadows (``core.routing``) and their effect on a scored batch."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.ledger import Batch, Release
from streamer.core.output_records import output_records
from streamer.core.routing import Catalog, Serving, Split, key_fractions
from streamer.core.scoring import score_records
from streamer.core.types import Records

CARD = ModelCard(
    "fraud", 1, "binary-classification", ("a", "b"), "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label")
)
CARDS = {"fraud": {v: replace(CARD, version=v) for v in (1, 2, 3)}}


def fake_infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    p = 1 / (1 + np.exp(-x.sum(axis=1) * card.version))
    return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}


def versions_for(catalog: Catalog, keys: list[bytes]) -> list[int]:
    route = catalog.route("fraud")
    if not isinstance(route, Split):
        return [route.version] * len(keys)
    return [route.cards[k].version for k in route.assign(keys, [""] * len(keys))]


keys_strategy = st.lists(st.binary(min_size=0, max_size=24), min_size=1, max_size=200)


@given(keys=keys_strategy, weight=st.floats(0.01, 0.99))
def test_the_same_key_gets_the_same_version_in_any_catalog(keys: list[bytes], weight: float) -> None:
    one = Catalog(CARDS, serving={"fraud": Serving(pin=1, canary=((2, weight),))})
    two = Catalog(dict(CARDS), serving={"fraud": Serving(pin=1, canary=((2, weight),))})
    assert versions_for(one, keys) == versions_for(two, keys)
    assert versions_for(one, keys + keys)[len(keys) :] == versions_for(one, keys)


@given(low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0), keys=keys_strategy)
def test_a_growing_canary_only_takes_keys(low: float, high: float, keys: list[bytes]) -> None:
    low, high = sorted((low, high))
    before = versions_for(Catalog(CARDS, serving={"fraud": Serving(pin=1, canary=((3, low),))}), keys)
    after = versions_for(Catalog(CARDS, serving={"fraud": Serving(pin=1, canary=((3, high),))}), keys)
    for was, now in zip(before, after, strict=True):
        assert was == now or (was == 1 and now == 3)


@settings(max_examples=20)
@given(weights=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=3))
def test_the_split_follows_the_weights(weights: list[float]) -> None:
    canary = tuple(zip((1, 2, 3), weights, strict=False))
    catalog = Catalog(CARDS, serving={"fraud": Serving(pin=1, canary=canary)})
    keys = [f"customer-{i}".encode() for i in range(20_000)]
    counts = np.bincount(versions_for(catalog, keys), minlength=4)[1:]
    listed = dict(canary)
    others = sum(w for v, w in listed.items() if v != 1)
    shares = {v: listed.get(v, 0.0) for v in (1, 2, 3)}
    if others < 1:
        shares[1] += 1 - others
    total = sum(shares.values())
    for v in (1, 2, 3):
        assert abs(counts[v - 1] / len(keys) - shares[v] / total) < 0.02, (v, counts, shares)


def canary_share(name: str, keys: list[bytes], weight: float) -> float:
    catalog = Catalog({name: {v: replace(CARD, name=name, version=v) for v in (1, 2)}})
    split = catalog.with_serving({name: Serving(pin=1, canary=((2, weight),))}).split(name)
    assert split is not None
    return sum(split.cards[k].version == 2 for k in split.assign(keys, [""] * len(keys))) / len(keys)


def sigmas_off(name: str, keys: list[bytes]) -> list[float]:
    """How many binomial standard deviations the share of a 10 %, 30 % and 60 % canary is from its weight."""
    n = len(keys)
    return [(canary_share(name, keys, w) - w) / (w * (1 - w) / n) ** 0.5 for w in (0.1, 0.3, 0.6)]


def sequential_ids(prefix: str, start: int, count: int, extra_width: int) -> list[bytes]:
    width = len(str(start + count - 1)) + extra_width
    return [f"{prefix}{start + i:0{width}d}".encode() for i in range(count)]


def test_sequential_customer_ids_get_the_canary_share_asked_for() -> None:
    """The issue's case: CRC-32 gave a 10 % canary 13.5 % and a 60 % one 67.6 % of cust-00000...cust-00999."""
    for count in (1000, 10_000):
        off = sigmas_off("fraud", sequential_ids("cust-", 0, count, 5 - len(str(count - 1))))
        assert all(abs(z) <= 3 for z in off), (count, off)


FAMILIES = 40
CHANCE_MISSES = 4


# A family is one model name and the ids prefix+start..start+count-1 at one width, drawn at 1,000 and at
# 10,000 ids; it misses when one of its six shares (10/30/60 % at both counts) is over 3 standard deviations
# off. No placement keeps every family within 3 sigma: an ideal random one misses about 1.4 % of families
# (measured over 3,000 random families), so more than CHANCE_MISSES of FAMILIES happens by chance with a
# probability of about 0.04 %. The CRC-32 placement missed 44 % of families (about 18 of 40). Names are unique,
# so families are independent draws (the name seeds the placement).
@settings(max_examples=5)
@given(
    families=st.lists(
        st.tuples(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
            st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:", max_size=12),
            st.integers(0, 10**6),
            st.integers(0, 6),
        ),
        min_size=FAMILIES,
        max_size=FAMILIES,
        unique_by=lambda family: family[0],
    )
)
def test_sequential_ids_get_the_canary_share_within_three_sigma(families: list[tuple[str, str, int, int]]) -> None:
    missed = []
    for name, prefix, start, extra_width in families:
        off = [
            z for count in (1000, 10_000) for z in sigmas_off(name, sequential_ids(prefix, start, count, extra_width))
        ]
        if any(abs(z) > 3 for z in off):
            missed.append((name, prefix, start, extra_width, [round(z, 2) for z in off]))
    assert len(missed) <= CHANCE_MISSES, missed


def test_a_key_keeps_its_place_across_processes_and_releases() -> None:
    """The placement is part of the contract: a change moves keys between versions (a migration note)."""
    assert key_fractions("fraud", [b"cust-00000", b"", b"\xff" * 40]).tolist() == [
        0.917445406315836,
        0.06758990070675808,
        0.35327864672545695,
    ]
    assert key_fractions("other", [b"cust-00000"])[0] != key_fractions("fraud", [b"cust-00000"])[0]
    assert key_fractions("fraud", []).shape == (0,)


def test_policies_ignore_versions_that_are_not_loaded() -> None:
    catalog = Catalog({"fraud": {1: CARD}}, serving={"fraud": Serving(pin=7, canary=((2, 0.5),), shadow=3)})
    assert catalog.route("fraud") == CARD
    assert catalog.serving_version("fraud") == 1
    assert catalog.shadow_of(CARD) is None
    pinned = Catalog(CARDS, pins={"fraud": 2})
    assert pinned.serving_version("fraud") == 2 and pinned.resolve("fraud").version == 2
    assert Catalog(CARDS).serving_version("fraud") == 3
    assert catalog.route("fraud@1") == CARD


def test_a_named_version_overrides_the_split() -> None:
    catalog = Catalog(CARDS, serving={"fraud": Serving(pin=1, canary=((2, 0.5),))})
    assert catalog.route("fraud@3").version == 3
    assert isinstance(catalog.route("fraud"), Split)
    assert isinstance(Catalog(CARDS, default="fraud", serving=catalog.serving).route(None), Split)


def records_of(rows: list[dict], keys: list[bytes | None]) -> Records:
    values = [json.dumps(row).encode() for row in rows]
    return Records.of("requests", 0, list(range(len(values))), values, keys)


@given(
    features=st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=40),
    broken=st.sets(st.integers(0, 39)),
)
def test_a_shadow_scores_the_champions_rows_and_changes_nothing_that_leaves(
    features: list[tuple[float, float]], broken: set[int]
) -> None:
    rows = [{"id": f"r{i}", "features": {"a": a, "b": "x" if i in broken else b}} for i, (a, b) in enumerate(features)]
    rows.append({"id": "named", "model": "fraud@1", "features": {"a": 1.0, "b": 1.0}})
    records = records_of(rows, [f"k{i}".encode() for i in range(len(rows))])
    plain = score_records(records, Catalog(CARDS, serving={"fraud": Serving(pin=2)}), fake_infer)
    shadowed = score_records(records, Catalog(CARDS, serving={"fraud": Serving(pin=2, shadow=3)}), fake_infer)
    assert plain.shadow is None
    assert shadowed.bodies == plain.bodies and shadowed.errors == plain.errors
    assert shadowed.shadow is not None
    champion_rows = [r for r, b in enumerate(plain.bodies) if b is not None and json.loads(b + b"}")["version"] == "2"]
    shadow_rows = [r for r, b in enumerate(shadowed.shadow.bodies) if b is not None]
    assert shadow_rows == champion_rows
    for row in shadow_rows:
        body = json.loads(shadowed.shadow.bodies[row] + b"}")
        assert body["version"] == "3" and body["id"] == rows[row]["id"]
        a, b = rows[row]["features"]["a"], rows[row]["features"]["b"]
        assert abs(body["score"] - 1 / (1 + np.exp(-(np.float32(a) + np.float32(b)) * 3))) < 1e-6


@given(keys=st.lists(st.one_of(st.none(), st.binary(max_size=8)), min_size=1, max_size=60))
def test_canary_rows_are_scored_by_the_version_their_key_gets(keys: list[bytes | None]) -> None:
    catalog = Catalog(CARDS, serving={"fraud": Serving(pin=1, canary=((2, 0.3), (3, 0.3)))})
    rows = [{"id": f"r{i}", "features": {"a": 0.5, "b": 0.25}} for i in range(len(keys))]
    scored = score_records(records_of(rows, keys), catalog, fake_infer)
    split = catalog.route("fraud")
    assert isinstance(split, Split)
    expected = [split.cards[k].version for k in split.assign(keys, [r["id"] for r in rows])]
    got = [int(json.loads(b + b"}")["version"]) for b in scored.bodies]  # type: ignore[operator]
    assert got == expected
    again = score_records(records_of(rows[::-1], keys[::-1]), catalog, fake_infer)
    assert [int(json.loads(b + b"}")["version"]) for b in again.bodies][::-1] == got  # type: ignore[operator]


def test_a_challenger_that_cannot_score_a_row_is_counted_and_changes_nothing() -> None:
    """The challenger reads a feature the requests lack: its rows fail in the shadow pass only, counted as
    ``failed``; the champion's outputs and dead letters are exactly those without a shadow."""
    wider = replace(CARD, version=3, features=("a", "b", "c"))
    cards = {"fraud": {1: CARD, 3: wider}}
    rows = [{"id": f"r{i}", "features": {"a": 0.1 * i, "b": 1.0}} for i in range(10)]
    rows[4]["features"]["c"] = 2.0  # the one row the challenger can score
    rows[7]["features"]["b"] = "x"  # a bad row for both
    records = records_of(rows, [b"k"] * len(rows))
    plain = score_records(records, Catalog(cards, serving={"fraud": Serving(pin=1)}), fake_infer)
    shadowed = score_records(records, Catalog(cards, serving={"fraud": Serving(pin=1, shadow=3)}), fake_infer)
    assert shadowed.bodies == plain.bodies and shadowed.errors == plain.errors
    assert shadowed.shadow is not None
    assert [r for r, b in enumerate(shadowed.shadow.bodies) if b is not None] == [4]
    assert sorted(shadowed.shadow.errors) == [0, 1, 2, 3, 5, 6, 8, 9]
    metrics = WorkerMetrics()
    release = Release(Batch(0, 0, records, 0.0, 0.0), shadowed, None, 0)
    metrics.on_released(release, output_records(shadowed, None, 0.0, 1 << 20))
    exported = metrics.exposition().decode()
    assert 'streamer_shadow_predictions_total{model="fraud",outcome="prediction",version="3"} 1.0' in exported
    assert 'streamer_shadow_predictions_total{model="fraud",outcome="failed",version="3"} 8.0' in exported
    assert 'streamer_requests_total{model="fraud",outcome="prediction",version="1"} 9.0' in exported
