"""Declared scoring graphs (``core.graph.spec``, ``core.graph.execution``) with a fake inference function: parsing and
validation (random DAGs and cycles), ensemble maths, the cascade's row-order merge for any split, and graphs
routed and encoded by ``score_records`` like models."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ConfigError
from streamer.core.graph.drawing import describe, to_dot
from streamer.core.graph.execution import Enrichment, run_graph
from streamer.core.graph.spec import bind, card_of, parse_graph
from streamer.core.routing import Catalog, Serving, Split
from streamer.core.scoring import score_records
from streamer.core.types import Records

FEATURES = ("a", "b")
BASE = ModelCard(
    "cheap", 1, "binary-classification", FEATURES, "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label")
)
MODELS = {
    "cheap": {1: BASE},
    "heavy": {1: replace(BASE, name="heavy")},
    "third": {1: replace(BASE, name="third", features=("a", "b", "c"))},
    "stacker": {1: replace(BASE, name="stacker", features=("m1", "m2"))},
    "price": {1: replace(BASE, name="price", task="regression", score=OutputRef("variable"), label=None)},
}
WEIGHTS = {
    "cheap": (1.0, 0.5),
    "heavy": (2.0, -1.0),
    "third": (0.3, 0.3, 1.0),
    "stacker": (3.0, 3.0),
    "price": (1.0, 1.0),
}
CALLS: list[tuple[str, int]] = []


def fake_infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    CALLS.append((card.ref, x.shape[0]))
    margin = x.astype(np.float64) @ np.asarray(WEIGHTS[card.name]) * card.version - (
        1.5 if card.name == "stacker" else 0
    )
    if card.task == "regression":
        return {"variable": margin.reshape(-1, 1).astype(np.float32)}
    p = 1 / (1 + np.exp(-margin))
    return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}


def expected_p(name: str, x: np.ndarray, version: int = 1) -> np.ndarray:
    return fake_infer(
        MODELS[name][version] if version in MODELS[name] else replace(MODELS[name][1], version=version), x
    )["probabilities"][:, 1].astype(np.float64)


CATALOG = Catalog(MODELS)


def graph(stages: dict, output: str, inputs: tuple[str, ...] = FEATURES, **extra) -> dict:
    return {"name": "g", "version": 1, "inputs": list(inputs), "output": output, "stages": stages, **extra}


def run(spec_table: dict, x: np.ndarray, catalog: Catalog = CATALOG, lookup=None, keys=None):
    spec = bind(parse_graph(spec_table, "test"), catalog.resolve)
    keys = keys if keys is not None else [f"k{i}".encode() for i in range(len(x))]
    kwargs = {"lookup": lookup} if lookup is not None else {}
    return run_graph(
        spec, x.astype(np.float32), keys, [f"id{i}" for i in range(len(x))], catalog.route, fake_infer, **kwargs
    )


matrices = st.integers(1, 60).flatmap(
    lambda n: st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=n, max_size=n).map(np.array)
)


@given(x=matrices, low=st.floats(0, 1), high=st.floats(0, 1))
def test_a_cascade_merges_both_phases_in_row_order_and_runs_the_second_on_unsure_rows_only(
    x: np.ndarray, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    stages = {"phases": {"kind": "cascade", "first": "cheap", "then": "heavy", "low": low, "high": high}}
    CALLS.clear()
    done = run(graph(stages, "phases"), x)
    calls = list(CALLS)
    first, second = expected_p("cheap", x.astype(np.float32)), expected_p("heavy", x.astype(np.float32))
    unsure = (first >= low) & (first <= high)
    np.testing.assert_allclose(done.result.score, np.where(unsure, second, first), rtol=1e-6)
    assert done.result.outputs["phases.path"].tolist() == ["then" if u else "first" for u in unsure]
    assert calls == [("cheap@1", len(x))] + ([("heavy@1", int(unsure.sum()))] if unsure.any() else [])
    rows = {s.stage: s.rows for s in done.stats}
    assert rows == {"phases/first": len(x), "phases/then": int(unsure.sum())}


@given(
    x=matrices,
    method=st.sampled_from(["mean", "weighted", "max", "vote"]),
    weights=st.tuples(st.floats(0.1, 5), st.floats(0.1, 5)),
)
def test_ensembles_combine_member_scores_as_a_naive_loop_does(x: np.ndarray, method: str, weights: tuple) -> None:
    stages = {
        "m1": {"kind": "model", "model": "cheap"},
        "m2": {"kind": "model", "model": "heavy"},
        "both": {"kind": "ensemble", "members": ["m1", "m2"], "method": method}
        | ({"weights": list(weights)} if method == "weighted" else {}),
    }
    done = run(graph(stages, "both"), x)
    p1, p2 = expected_p("cheap", x.astype(np.float32)), expected_p("heavy", x.astype(np.float32))
    v1 = fake_infer(MODELS["cheap"][1], x.astype(np.float32))["label"]  # a vote counts the models' own labels
    v2 = fake_infer(MODELS["heavy"][1], x.astype(np.float32))["label"]
    for i in range(len(x)):
        if method == "mean":
            want = (p1[i] + p2[i]) / 2
        elif method == "weighted":
            want = (weights[0] * p1[i] + weights[1] * p2[i]) / (weights[0] + weights[1])
        elif method == "max":
            want = max(p1[i], p2[i])
        else:
            want = (int(v1[i]) + int(v2[i])) / 2
        assert abs(done.result.score[i] - want) < 1e-6
        want_label = (want > 0.5) if method == "vote" else (want >= 0.5)
        if abs(want - 0.5) > 1e-9:  # at the threshold itself the last bit of rounding decides
            assert done.result.label[i] == int(want_label)
    assert set(done.result.outputs) >= {"m1", "m2", "both"}


def test_a_stacking_ensemble_feeds_the_members_scores_to_its_model() -> None:
    x = np.array([[0.5, -1.0], [2.0, 1.0], [-1.0, 0.0]])
    stages = {
        "m1": {"kind": "model", "model": "cheap"},
        "m2": {"kind": "model", "model": "heavy"},
        "stack": {"kind": "ensemble", "members": ["m1", "m2"], "method": "stack", "model": "stacker"},
    }
    done = run(graph(stages, "stack"), x)
    members = np.column_stack([expected_p("cheap", x.astype(np.float32)), expected_p("heavy", x.astype(np.float32))])
    np.testing.assert_allclose(done.result.score, expected_p("stacker", members.astype(np.float32)), rtol=1e-6)


@settings(max_examples=60)
@given(n=st.integers(2, 8), data=st.data())
def test_random_dags_parse_in_dependency_order_and_a_back_edge_is_a_cycle(n: int, data: st.DataObject) -> None:
    """Stage i may read the output of any earlier stage; order must put producers first. Adding an edge from
    the first stage to the last makes a cycle, reported as one error naming the stages."""
    stages: dict[str, dict] = {}
    for i in range(n):
        source = data.draw(st.sampled_from(["a"] + [f"t{j}" for j in range(i)]), label=f"input of s{i}")
        stages[f"s{i}"] = {"kind": "transform", "ops": [{"op": "clip", "input": source, "output": f"t{i}", "low": -1}]}
    stages["m"] = {"kind": "model", "model": "cheap"}
    names = list(stages)
    shuffled = data.draw(st.permutations(names))
    spec = bind(parse_graph(graph({k: stages[k] for k in shuffled}, "m"), "test"), CATALOG.resolve)
    position = {name: k for k, name in enumerate(spec.order)}
    for i in range(n):
        source = stages[f"s{i}"]["ops"][0]["input"]
        if source != "a":
            assert position[f"s{source[1:]}"] < position[f"s{i}"]
    readers = [i for i in range(n) if stages[f"s{i}"]["ops"][0]["input"] != "a"]
    if readers:  # make the stage at the root of a reader's chain wait for that reader: a cycle
        j = readers[-1]
        root = j
        while stages[f"s{root}"]["ops"][0]["input"] != "a":
            root = int(stages[f"s{root}"]["ops"][0]["input"][1:])
        stages[f"s{root}"] = {**stages[f"s{root}"], "after": [f"s{j}"]}
        with pytest.raises(ConfigError, match="cycle") as raised:
            parse_graph(graph(stages, "m"), "test")
        assert f"s{root}" in str(raised.value) and f"s{j}" in str(raised.value)


@pytest.mark.parametrize(
    ("stages", "output", "message"),
    [
        ({"m": {"kind": "model", "model": "nope"}}, "m", "stage 'm': no model named 'nope'"),
        ({"m": {"kind": "model", "model": "third"}}, "m", "stage 'm': model third@1 needs feature 'c'"),
        ({"c": {"kind": "cascade", "first": "price", "then": "heavy"}}, "c", "stage 'c': price@1 is a regression"),
        (
            {
                "m": {"kind": "model", "model": "cheap"},
                "r": {
                    "kind": "rules",
                    "default": "ok",
                    "rules": [
                        {
                            "name": "x",
                            "when": [{"field": "ghost", "op": ">", "value": 1}],
                            "decision": "no",
                            "reason": "r",
                        }
                    ],
                },
            },
            "m",
            "stage 'r': reads 'ghost'",
        ),
        (
            {"m": {"kind": "model", "model": "cheap"}, "e": {"kind": "ensemble", "members": ["m", "zzz"]}},
            "e",
            "no stage named 'zzz'",
        ),
        (
            {
                "m": {"kind": "model", "model": "cheap", "after": ["m2"]},
                "m2": {"kind": "model", "model": "heavy", "after": ["m"]},
            },
            "m",
            "cycle",
        ),
        (
            {
                "t": {"kind": "transform", "ops": [{"op": "log", "input": "a", "output": "b"}]},
                "m": {"kind": "model", "model": "cheap"},
            },
            "m",
            "writes 'b'",
        ),
    ],
)
def test_an_invalid_graph_is_one_error_naming_the_stage(stages: dict, output: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        bind(parse_graph(graph(stages, output), "graphs/g.toml"), CATALOG.resolve)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_enrichment_defaults_and_misses_reach_the_model_and_the_stats() -> None:
    x = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])

    def lookup(stage, keys):
        values = np.array([[9.0] if k == b"k1" else [0.0] for k in keys])
        return Enrichment(values, np.array([k == b"k1" for k in keys]))

    stages = {
        "acct": {"kind": "enrich", "entity": "account", "features": {"c": 0.0}},
        "m": {"kind": "model", "model": "third"},
    }
    done = run(graph(stages, "m"), x, lookup=lookup)
    with_c = np.column_stack([x, [0.0, 9.0, 0.0]]).astype(np.float32)
    np.testing.assert_allclose(done.result.score, expected_p("third", with_c), rtol=1e-6)
    assert (done.stats[0].stage, done.stats[0].rows, done.stats[0].misses) == ("acct", 3, 2)


def test_a_model_stage_follows_the_canary_split_by_key() -> None:
    cards = dict(MODELS) | {"heavy": {1: MODELS["heavy"][1], 2: replace(MODELS["heavy"][1], version=2)}}
    catalog = Catalog(cards, serving={"heavy": Serving(pin=1, canary=((2, 0.5),))})
    x = np.tile([[0.5, 0.25]], (40, 1))
    keys = [f"cust-{i}".encode() for i in range(40)]
    done = run(graph({"m": {"kind": "model", "model": "heavy"}}, "m"), x, catalog=catalog, keys=keys)
    split = catalog.route("heavy")
    assert isinstance(split, Split)
    versions = [split.cards[k].version for k in split.assign(keys, [""] * 40)]
    assert done.result.outputs["m.model"].tolist() == [f"heavy@{v}" for v in versions]
    assert {1, 2} == set(versions)


def test_a_graph_is_routed_scored_and_encoded_like_a_model() -> None:
    spec = parse_graph(
        graph(
            {
                "phases": {"kind": "cascade", "first": "cheap", "then": "heavy", "low": 0.3, "high": 0.7},
                "decide": {
                    "kind": "rules",
                    "mode": "first-match",
                    "default": "allow",
                    "rules": [
                        {
                            "name": "deny",
                            "when": [{"field": "key", "op": "in", "value": ["bad"]}],
                            "decision": "deny",
                            "reason": "deny list",
                        },
                        {
                            "name": "high",
                            "when": [{"field": "phases", "op": ">=", "value": 0.5}],
                            "decision": "review",
                            "reason": "high score",
                        },
                    ],
                },
            },
            "phases",
        ),
        "test",
    )
    spec = bind(spec, CATALOG.resolve)
    catalog = Catalog({**MODELS, "g": {1: card_of(spec)}}, graphs={spec.ref: spec})
    rows = [{"id": f"r{i}", "model": "g", "features": {"a": float(i - 2), "b": 0.5}} for i in range(5)]
    rows.append({"id": "bad-key", "model": "g", "features": {"a": 3.0, "b": 0.5}})
    rows.append({"id": "broken", "model": "g", "features": {"a": "x", "b": 0.5}})
    keys = [b"k"] * 5 + [b"bad", b"k"]
    records = Records.of("requests", 0, list(range(len(rows))), [json.dumps(r).encode() for r in rows], keys)
    scored = score_records(records, catalog, fake_infer)
    assert 6 in scored.errors and scored.errors[6].reason == "schema"
    bodies = [json.loads(b + b"}") for b in scored.bodies[:6]]  # type: ignore[operator]
    assert {b["model"] for b in bodies} == {"g"} and {b["version"] for b in bodies} == {"1"}
    assert bodies[5]["decision"] == "deny" and bodies[5]["reasons"] == ["deny list"]
    for body in bodies[:5]:
        assert body["decision"] == ("review" if body["score"] >= 0.5 else "allow")
        assert body["outputs"]["phases.path"] in ("first", "then")
        assert body["outputs"]["phases"] == body["score"]
    assert {s.stage for s in scored.stages} == {"phases/first", "phases/then", "decide"}
    assert "phases" in "\n".join(describe(spec)) and '"phases" -> prediction' in to_dot(spec)
