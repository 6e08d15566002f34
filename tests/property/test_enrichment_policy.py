"""What a prediction says about its entity features, and what an enrich stage's ``on_failure`` does with the rows
whose lookup failed (``core.graph.execution``, through ``core.scoring.score_records``: the bytes a worker writes).

A graph with two enrich stages (one keyed by the request key, one by a request feature) over a fake feature store
whose answer per stage is drawn -- known keys, or a failure for the whole batch -- with every combination of
``on_failure``: each row's ``enrichment`` is the worst of its stages' outcomes; a row a ``dead-letter`` stage
failed is an ``enrichment-failed`` dead letter and nothing else; a row a ``review`` stage failed is decided
``review`` with that stage's reason whatever the rules say; every other row is decided by the rules, which read
``<stage>.enrichment`` like any column. Checked against a naive per-row evaluator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ConfigError
from streamer.core.graph.drawing import describe
from streamer.core.graph.execution import Enrichment, review_reason
from streamer.core.graph.spec import bind, card_of, parse_graph
from streamer.core.graph.stages import Stage
from streamer.core.routing import Catalog
from streamer.core.scoring import score_records
from streamer.core.types import Records

MODEL = ModelCard(
    "m", 1, "binary-classification", ("a", "flagged"), "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label")
)
POLICIES = ("defaults", "dead-letter", "review")
WORST = {"store": 0, "missing": 1, "failed": 2}


def infer(card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    p = 1 / (1 + np.exp(-x.astype(np.float64).sum(axis=1)))
    return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}


def graph_table(acct: str | None, merchant: str | None, rules: bool = True) -> dict:
    """Two enrich stages (``on_failure`` None: not declared), a model, and rules reading an enrichment outcome."""
    acct_stage = {"kind": "enrich", "entity": "account", "features": {"flagged": 0.0}}
    merchant_stage = {"kind": "enrich", "entity": "merchant", "key": "merchant_id", "features": {"risk": 0.5}}
    if acct is not None:
        acct_stage["on_failure"] = acct
    if merchant is not None:
        merchant_stage["on_failure"] = merchant
    stages: dict = {"acct": acct_stage, "merchant": merchant_stage, "score": {"kind": "model", "model": "m"}}
    if rules:
        stages["decide"] = {
            "kind": "rules",
            "default": "allow",
            "default_reason": "no rule matched",
            "rules": [
                {
                    "name": "flagged",
                    "when": [{"field": "flagged", "op": ">=", "value": 1}],
                    "decision": "deny",
                    "reason": "flagged",
                },
                {
                    "name": "unknown",
                    "when": [{"field": "acct.enrichment", "op": "==", "value": "missing"}],
                    "decision": "check",
                    "reason": "unknown account",
                },
            ],
        }
    return {"name": "g", "inputs": ["a", "merchant_id"], "output": "score", "stages": stages}


class FakeStore:
    """Per entity: the keys it knows (with their features), or a failure of the whole lookup."""

    def __init__(self, known: dict[str, dict[bytes, float]], failing: set[str]) -> None:
        self.known, self.failing = known, failing

    def __call__(self, stage: Stage, keys: Sequence[bytes | None]) -> Enrichment:
        default = stage.defaults[0][1]
        if stage.entity in self.failing:
            return Enrichment(np.full((len(keys), 1), default), np.zeros(len(keys), bool), "Redis unavailable (test)")
        known = self.known[stage.entity]
        found = np.array([k is not None and k in known for k in keys], dtype=bool)
        values = np.array([[known[k] if f else default] for k, f in zip(keys, found, strict=True)])
        return Enrichment(values, found)


def score(table: dict, rows: list[tuple[bytes | None, float, float]], store: FakeStore):
    spec = bind(parse_graph(table, "g.toml"), Catalog({"m": {1: MODEL}}).resolve)
    catalog = Catalog({"m": {1: MODEL}, "g": {1: card_of(spec)}}, graphs={spec.ref: spec})
    values = [
        json.dumps({"id": f"r{i}", "model": "g", "features": {"a": a, "merchant_id": m}}).encode()
        for i, (_, a, m) in enumerate(rows)
    ]
    records = Records.of("requests", 0, list(range(len(rows))), values, [k for k, _, _ in rows])
    return spec, score_records(records, catalog, infer, lookup=store)


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from([None, b"k1", b"k2", b"k3"]),
        st.floats(-2, 2, allow_nan=False),
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
    min_size=1,
    max_size=40,
)


@given(
    rows=rows_strategy,
    acct=st.sampled_from([None, *POLICIES]),
    merchant=st.sampled_from([None, "defaults", "dead-letter", "review"]),
    accounts=st.sets(st.sampled_from([b"k1", b"k2", b"k3"])),
    merchants=st.sets(st.sampled_from([b"1", b"2", b"3"])),
    failing=st.sets(st.sampled_from(["account", "merchant"])),
)
def test_each_row_says_where_its_features_came_from_and_gets_what_on_failure_says(
    rows: list, acct: str | None, merchant: str | None, accounts: set, merchants: set, failing: set
) -> None:
    store = FakeStore(
        {"account": {k: (1.0 if k == b"k1" else 0.0) for k in accounts}, "merchant": dict.fromkeys(merchants, 0.9)},
        failing,
    )
    spec, scored = score(graph_table(acct, merchant), rows, store)
    policy = {"acct": spec.stages["acct"].on_failure, "merchant": spec.stages["merchant"].on_failure}
    assert policy == {"acct": acct or "review", "merchant": merchant or "review"}  # the default with rules
    stats = {s.stage: s for s in scored.stages}
    failed_rows = {"acct": 0, "merchant": 0}
    for i, (key, _, merchant_id) in enumerate(rows):
        outcome = {
            "acct": _naive_outcome(key, accounts, "account" in failing),
            "merchant": _naive_outcome(str(int(merchant_id)).encode(), merchants, "merchant" in failing),
        }
        for stage, seen in outcome.items():
            failed_rows[stage] += seen == "failed"
        dead = [s for s in ("acct", "merchant") if outcome[s] == "failed" and policy[s] == "dead-letter"]
        if dead:
            assert scored.bodies[i] is None and scored.errors[i].reason == "enrichment-failed"
            assert f"stage {dead[0]!r}" in scored.errors[i].detail
            continue
        assert i not in scored.errors
        body = json.loads(scored.bodies[i] + b"}")  # type: ignore[operator]
        assert body["enrichment"] == max(outcome.values(), key=WORST.__getitem__)
        reviewed = [s for s in ("acct", "merchant") if outcome[s] == "failed" and policy[s] == "review"]
        flagged = key == b"k1" and outcome["acct"] == "store"
        if reviewed:
            want = ("review", [review_reason(reviewed[0])])
        elif flagged:
            want = ("deny", ["flagged"])
        elif outcome["acct"] == "missing":
            want = ("check", ["unknown account"])
        else:
            want = ("allow", ["no rule matched"])
        assert (body["decision"], body["reasons"]) == want
    for stage in ("acct", "merchant"):
        assert (stats[stage].failed_rows, stats[stage].on_failure) == (failed_rows[stage], policy[stage])
        assert stats[stage].failed == (("account" if stage == "acct" else "merchant") in failing)


def _naive_outcome(key: bytes | None, known: set, failing: bool) -> str:
    if key is None:
        return "missing"
    if failing:
        return "failed"
    return "store" if key in known else "missing"


def test_a_graph_without_rules_defaults_to_defaults_and_refuses_review() -> None:
    spec = parse_graph(graph_table(None, None, rules=False), "g.toml")
    assert {spec.stages[s].on_failure for s in ("acct", "merchant")} == {"defaults"}
    with pytest.raises(ConfigError) as raised:
        parse_graph(graph_table("review", None, rules=False), "g.toml")
    message = str(raised.value)
    assert "stage 'acct': on_failure = \"review\" needs a rules stage to decide" in message and "\n" not in message


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"on_failure": "fail-open"}, 'on_failure must be "defaults" | "dead-letter" | "review"'),
        ({"on_failure": ["review"]}, "on_failure must be"),
        ({"timeout_ms": 0}, "timeout_ms must be above 0 and at most 10000"),
        ({"timeout_ms": math.nan}, "timeout_ms must be above 0"),
        ({"timeout_ms": "50"}, "timeout_ms: must be a number"),
        ({"retry_after_s": 1}, "unknown setting(s) retry_after_s for a enrich stage"),
    ],
)
def test_an_enrich_stage_refuses_a_bad_policy_in_one_line(setting: dict, message: str) -> None:
    table = graph_table(None, None)
    table["stages"]["acct"].update(setting)
    with pytest.raises(ConfigError) as raised:
        parse_graph(table, "g.toml")
    assert message in str(raised.value) and "stage 'acct'" in str(raised.value)


def test_an_oip_request_is_one_dead_letter_or_arrays_of_review() -> None:
    """An OIP request owns several rows under one key: a failed lookup makes the whole request one
    ``enrichment-failed`` dead letter (dead-letter), or answers ``review`` for each of its rows (review)."""
    oip = {
        "id": "o1",
        "model": "g",
        "inputs": [
            {"name": "a", "shape": [3], "datatype": "FP64", "data": [0.1, 0.2, 0.3]},
            {"name": "merchant_id", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]},
        ],
    }
    store = FakeStore({"account": {}, "merchant": {}}, {"account"})
    for policy in ("dead-letter", "review"):
        spec = bind(parse_graph(graph_table(policy, "defaults"), "g.toml"), Catalog({"m": {1: MODEL}}).resolve)
        catalog = Catalog({"m": {1: MODEL}, "g": {1: card_of(spec)}}, graphs={spec.ref: spec})
        records = Records.of("requests", 0, [0], [json.dumps(oip).encode()], [b"k2"])
        scored = score_records(records, catalog, infer, lookup=store)
        if policy == "dead-letter":
            assert scored.bodies == [None] and scored.errors[0].reason == "enrichment-failed"
        else:
            body = json.loads(scored.bodies[0] + b"}")  # type: ignore[operator]
            assert body["decision"] == ["review"] * 3 and body["enrichment"] == ["failed"] * 3
            assert body["reasons"] == [[review_reason("acct")]] * 3


def test_a_rule_on_the_enrichment_outcome_and_the_stage_description() -> None:
    """``<stage>.enrichment`` is a column like any other: it makes an edge, and ``graph show`` names the policy."""
    spec = bind(parse_graph(graph_table("defaults", "dead-letter"), "g.toml"), Catalog({"m": {1: MODEL}}).resolve)
    assert "acct" in spec.dependencies()["decide"]
    shown = "\n".join(describe(spec))
    assert "acct: enrich account by key -> flagged (on failure: defaults)" in shown
    assert "merchant: enrich merchant by merchant_id -> risk (on failure: dead-letter)" in shown
    assert spec.optional_fields() == {"decision", "reasons", "enrichment"}
