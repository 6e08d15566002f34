"""Business rules (``core.rules``) against a naive per-row evaluator, in both modes; parse errors; fields_of.

The generated rule sets are TOML-shaped tables (what a graph file holds), parsed by ``parse_rules`` and then
evaluated on generated columns. The naive evaluator reads the same tables and the same values one row at a
time with plain Python comparisons, so parsing and the vectorised evaluation are checked together.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.errors import ConfigError, ScoringError
from streamer.core.graph.rules import OPS, Condition, Rule, RuleSet, RulesResult, evaluate, fields_of, parse_rules

WHERE = "graphs/fraud.toml: stages.decide"
NAN = float("nan")
INF = float("inf")

# column name -> (column kind, kind of the values the rules compare it with). "m" and "t" are compared with
# the other kind: no parse error is possible (parsing does not see columns), and nothing ever matches.
FIELDS = {"a": ("number", "number"), "b": ("number", "number"), "k": ("text", "text")}
FIELDS |= {"m": ("number", "text"), "t": ("text", "number")}

NUMBER_CELLS = st.sampled_from([-1.0, 0.0, -0.0, 1.0, 2.0, 2.5, 5000.0, INF, -INF, NAN])
TEXT_CELLS = st.sampled_from(["x", "y", "acct-13", "", None, NAN])
NUMBER_VALUES = st.sampled_from([-1, 0, 1, 2, 2.5, 5000, 1.0, True, False, INF, -INF])
TEXT_VALUES = st.sampled_from(["x", "y", "acct-13", "", "zzz"])
DECISIONS = st.sampled_from(["allow", "deny", "review"])


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    value_kind = FIELDS[field][1]
    ops = OPS if value_kind == "number" else tuple(op for op in OPS if op not in ("<", "<=", ">", ">="))
    op = draw(st.sampled_from(ops))
    if op in ("missing", "present"):
        return {"field": field, "op": op}
    values = NUMBER_VALUES if value_kind == "number" else TEXT_VALUES
    if op in ("in", "not in"):
        return {"field": field, "op": op, "value": draw(st.lists(values, max_size=4))}
    return {"field": field, "op": op, "value": draw(values)}


@st.composite
def rule_tables(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["first-match", "priority"]))
    table: dict[str, Any] = {"mode": mode, "default": draw(DECISIONS)}
    if draw(st.booleans()):
        table["default_reason"] = draw(st.sampled_from(["", "no rule matched"]))
    rules = []
    for i in range(draw(st.integers(1, 12))):  # over 8: several bytes per packed pattern
        rule: dict[str, Any] = {"name": f"r{i}", "decision": draw(DECISIONS)}
        when = draw(st.lists(conditions(), max_size=3))
        groups = draw(st.lists(st.lists(conditions(), min_size=1, max_size=2), max_size=2))
        if when or not groups:
            rule["when"] = when or [{"field": "a", "op": "present"}]
        if groups:
            rule["any"] = groups
        if draw(st.booleans()):  # shared reasons are allowed; an absent one is the rule's name
            rule["reason"] = draw(st.sampled_from([f"reason {i}", "shared reason"]))
        if mode == "priority" and draw(st.booleans()):
            rule["priority"] = draw(st.integers(-2, 3))
        rules.append(rule)
    table["rules"] = rules
    return table


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, dict[str, list[Any]]]:
    rows = draw(st.integers(0, 30))
    cells = {"number": NUMBER_CELLS, "text": TEXT_CELLS}
    return rows, {f: draw(st.lists(cells[kind], min_size=rows, max_size=rows)) for f, (kind, _) in FIELDS.items()}


def as_columns(values: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    return {f: np.array(values[f], dtype=np.float64 if kind == "number" else object) for f, (kind, _) in FIELDS.items()}


# ------------------------------------------------------------------------------------- the naive evaluator


def kinds_of(rules: RuleSet) -> dict[str, str]:
    """``field -> "number" | "text"`` for every field compared with a value (``Condition.kind``)."""
    return {c.field: kind for rule in rules.rules for c in rule.conditions() if (kind := c.kind) is not None}


def decision_names(result: RulesResult) -> list[str]:
    """The decision of every row, by name."""
    return [result.decisions[d] for d in result.decision.tolist()]


def naive_holds(condition: dict[str, Any], cell: Any) -> bool:
    missing = cell is None or (isinstance(cell, float) and math.isnan(cell))
    op = condition["op"]
    if op == "missing":
        return missing
    if op == "present":
        return not missing
    if missing:
        return False
    raw = condition["value"]
    values = [v if isinstance(v, str) else float(v) for v in (raw if isinstance(raw, list) else [raw])]
    if values and isinstance(values[0], str) != isinstance(cell, str):
        return False  # a number against text never holds
    value = values[0] if values else None
    if op == "in":
        return cell in values
    if op == "not in":
        return cell not in values
    if op == "==":
        return cell == value
    if op == "!=":
        return cell != value
    if op == "<":
        return cell < value
    if op == "<=":
        return cell <= value
    if op == ">":
        return cell > value
    return cell >= value


def naive_rule_holds(rule: dict[str, Any], row: dict[str, Any]) -> bool:
    if not all(naive_holds(c, row[c["field"]]) for c in rule.get("when", [])):
        return False
    groups = rule.get("any", [])
    return not groups or any(all(naive_holds(c, row[c["field"]]) for c in group) for group in groups)


def naive_evaluate(table: dict[str, Any], row: dict[str, Any]) -> tuple[str, list[str], int]:
    rules = table["rules"]
    matched = [i for i, rule in enumerate(rules) if naive_rule_holds(rule, row)]
    if table["mode"] == "first-match":
        chosen = matched[:1]
    else:
        chosen = sorted(matched, key=lambda i: (-rules[i].get("priority", 0), i))
    if not chosen:
        reason = table.get("default_reason", "")
        return table["default"], [reason] if reason else [], -1
    reasons = [rules[i].get("reason", rules[i]["name"]) for i in chosen]
    return rules[chosen[0]]["decision"], reasons, chosen[0]


# ------------------------------------------------------------------------------------------- properties


@given(rule_tables(), batches())
def test_evaluate_equals_the_naive_per_row_evaluator(
    table: dict[str, Any], batch: tuple[int, dict[str, list[Any]]]
) -> None:
    rows, values = batch
    result = evaluate(parse_rules(table, WHERE), as_columns(values), rows)
    assert result.decision.shape == result.rule.shape == (rows,)
    assert result.decision.dtype == result.rule.dtype == np.int64
    assert len(result.reasons) == rows
    for i in range(rows):
        decision, reasons, rule = naive_evaluate(table, {f: values[f][i] for f in FIELDS})
        assert result.decisions[result.decision[i]] == decision, i
        assert result.reasons[i] == reasons, i
        assert result.rule[i] == rule, i
    assert len({id(r) for r in result.reasons}) == rows  # every row owns its list


@given(rule_tables(), batches())
def test_priority_with_equal_priorities_decides_like_first_match(
    table: dict[str, Any], batch: tuple[int, dict[str, list[Any]]]
) -> None:
    rows, values = batch
    for rule in table["rules"]:
        rule.pop("priority", None)
    first = evaluate(parse_rules({**table, "mode": "first-match"}, WHERE), as_columns(values), rows)
    every = evaluate(parse_rules({**table, "mode": "priority"}, WHERE), as_columns(values), rows)
    assert first.decision.tolist() == every.decision.tolist()
    assert first.rule.tolist() == every.rule.tolist()
    assert [r[:1] for r in every.reasons] == [r[:1] for r in first.reasons]


@given(rule_tables())
def test_fields_of_and_kinds_of_name_every_condition(table: dict[str, Any]) -> None:
    rules = parse_rules(table, WHERE)
    raw = [c for r in table["rules"] for c in [*r.get("when", []), *(c for g in r.get("any", []) for c in g)]]
    assert fields_of(rules) == {c["field"] for c in raw}
    kinds = kinds_of(rules)
    assert set(kinds) <= fields_of(rules)
    for field, kind in kinds.items():
        assert kind == FIELDS[field][1]
    # every field compared with a non-empty value has a kind
    assert {c["field"] for c in raw if c.get("value") not in (None, [])} == set(kinds)


@given(st.lists(st.integers(-3, 3), min_size=64, max_size=80), batches())
def test_more_than_63_rules_in_priority_mode(priorities: list[int], batch: tuple[int, dict[str, list[Any]]]) -> None:
    rows, values = batch
    thresholds = [-1, 0, 1, 2, 2.5]
    rules = [
        {"name": f"r{i}", "when": [{"field": "a", "op": ">=", "value": thresholds[i % 5]}], "decision": f"d{i % 3}"}
        | {"priority": p, "reason": f"why {i}"}
        for i, p in enumerate(priorities)
    ]
    table = {"mode": "priority", "default": "none", "rules": rules}
    result = evaluate(parse_rules(table, WHERE), as_columns(values), rows)
    for i in range(rows):
        decision, reasons, rule = naive_evaluate(table, {f: values[f][i] for f in FIELDS})
        assert (result.decisions[result.decision[i]], result.reasons[i], result.rule[i]) == (decision, reasons, rule)


def test_the_issue_example() -> None:
    table = {
        "mode": "priority",
        "default": "allow",
        "default_reason": "no rule matched",
        "rules": [
            {
                "name": "deny-list",
                "when": [{"field": "key", "op": "in", "value": ["acct-13", "acct-666"]}],
                "decision": "deny",
                "reason": "account on the deny list",
            },
            {
                "name": "amount-limit",
                "when": [{"field": "amount", "op": ">", "value": 5000}],
                "decision": "review",
                "reason": "amount over the limit",
                "priority": 10,
            },
        ],
    }
    rules = parse_rules(table, WHERE)
    assert fields_of(rules) == {"key", "amount"}
    assert kinds_of(rules) == {"key": "text", "amount": "number"}
    columns = {
        "key": np.array(["acct-13", "acct-1", None, "acct-666"], dtype=object),
        "amount": np.array([10.0, 6000.0, np.nan, 7000.0]),
    }
    result = evaluate(rules, columns, 4)
    assert decision_names(result) == ["deny", "review", "allow", "review"]
    assert result.reasons == [
        ["account on the deny list"],
        ["amount over the limit"],
        ["no rule matched"],
        ["amount over the limit", "account on the deny list"],
    ]
    assert result.rule.tolist() == [0, 1, -1, 1]
    first = evaluate(
        parse_rules(
            {
                **table,
                "mode": "first-match",
                "rules": [{k: v for k, v in r.items() if k != "priority"} for r in table["rules"]],
            },
            WHERE,
        ),
        columns,
        4,
    )
    assert decision_names(first) == ["deny", "review", "allow", "deny"]


def test_other_dtypes_are_read_as_numbers_or_text() -> None:
    rules = parse_rules(
        {
            "default": "ok",
            "rules": [
                {"name": "big", "when": [{"field": "n", "op": ">=", "value": 3}], "decision": "big"},
                {"name": "flag", "when": [{"field": "f", "op": "==", "value": True}], "decision": "flagged"},
                {"name": "named", "when": [{"field": "s", "op": "!=", "value": "a"}], "decision": "named"},
            ],
        },
        WHERE,
    )
    columns = {
        "n": np.array([1, 5, 2, 0], dtype=np.int32),
        "f": np.array([False, False, True, False]),
        "s": np.array(["a", "a", "a", "b"]),  # a numpy str dtype, not object
    }
    result = evaluate(rules, columns, 4)
    assert decision_names(result) == ["ok", "big", "flagged", "named"]
    assert result.reasons == [[], ["big"], ["flag"], ["named"]]  # reason defaults to the rule's name


def test_a_deny_list_of_many_keys_and_text_subclasses() -> None:
    keys = [f"acct-{i}" for i in range(10_000)]
    rules = parse_rules(
        {
            "default": "allow",
            "rules": [{"name": "deny", "when": [{"field": "key", "op": "in", "value": keys[::2]}], "decision": "deny"}],
        },
        WHERE,
    )
    column = np.array([np.str_("acct-0"), "acct-1", "acct-9998", "acct-9999", None, 4.0], dtype=object)
    assert decision_names(evaluate(rules, {"key": column}, 6)) == ["deny", "allow", "deny"] + ["allow"] * 3


def test_a_missing_or_misshapen_column_fails_the_batch() -> None:
    rules = parse_rules(
        {"default": "a", "rules": [{"name": "r", "when": [{"field": "x", "op": "present"}], "decision": "b"}]}, WHERE
    )
    with pytest.raises(ScoringError, match="'x'"):
        evaluate(rules, {"y": np.zeros(3)}, 3)
    with pytest.raises(ScoringError, match="shape"):
        evaluate(rules, {"x": np.zeros(2)}, 3)
    with pytest.raises(ScoringError, match="dtype"):
        evaluate(rules, {"x": np.zeros(3, dtype="datetime64[s]")}, 3)


def test_empty_batches_and_rule_sets_built_by_hand() -> None:
    rules = RuleSet((Rule("r", (Condition("x", "missing"),), "deny", "why"),), "priority", "allow", "none")
    empty = evaluate(rules, {"x": np.zeros(0)}, 0)
    assert empty.decision.shape == (0,) and empty.reasons == []
    nothing = evaluate(RuleSet((), "priority", "allow"), {}, 2)
    assert decision_names(nothing) == ["allow", "allow"] and nothing.reasons == [[], []]


# ---------------------------------------------------------------------------------------------- parse errors

GOOD_RULE = {"name": "limit", "when": [{"field": "amount", "op": ">", "value": 5000}], "decision": "review"}


def with_rule(**changes: Any) -> dict[str, Any]:
    rule = {k: v for k, v in {**GOOD_RULE, **changes}.items() if v is not None}
    return {"default": "allow", "rules": [rule]}


BAD_TABLES = [
    ({"default": "allow", "rules": []}, "rules must be a non-empty list"),
    ({"default": "allow"}, "rules must be a non-empty list"),
    ({"rules": [GOOD_RULE]}, "default"),
    ({"default": "allow", "mode": "best-match", "rules": [GOOD_RULE]}, "mode 'best-match'"),
    ({"default": "allow", "rules": [GOOD_RULE], "colour": 1}, "unknown key(s) colour"),
    ({"default": "allow", "default_reason": 3, "rules": [GOOD_RULE]}, "default_reason"),
    ({"default": "allow", "rules": [GOOD_RULE, GOOD_RULE]}, "rule 'limit': duplicate rule name"),
    ({"default": "allow", "rules": ["limit"]}, "rules[0]: must be a table"),
    (with_rule(name=None), "rules[0]: name must be a non-empty string"),
    (with_rule(decision=None), "rule 'limit': decision must be a non-empty string"),
    (with_rule(decision=""), "rule 'limit': decision"),
    (with_rule(reason=""), "rule 'limit': reason"),
    (with_rule(priority=3), "rule 'limit': priority has no effect in mode 'first-match'"),
    (with_rule(when=[]), "rule 'limit': has no conditions"),
    (with_rule(when=None), "rule 'limit': has no conditions"),
    (with_rule(when={"field": "a"}), "rule 'limit': when: must be a list"),
    (with_rule(any=[[]]), "rule 'limit': an any group is empty"),
    (with_rule(any={"x": 1}), "rule 'limit': any must be a list"),
    (with_rule(unless=[]), "rule 'limit': unknown key(s) unless"),
    (with_rule(when=[{"field": "amount", "op": "~", "value": 1}]), "rule 'limit': when[0]: op '~' is not one of"),
    (with_rule(when=[{"field": "amount", "op": "like", "value": 1}]), "op 'like'"),
    (with_rule(when=[{"op": ">", "value": 1}]), "rule 'limit': when[0]: field must be"),
    (with_rule(when=[{"field": "amount", "op": ">"}]), "rule 'limit': when[0] (amount >): op '>' needs a value"),
    (with_rule(when=[{"field": "amount", "op": "missing", "value": 1}]), "takes no value"),
    (with_rule(when=[{"field": "amount", "op": ">", "value": "big"}]), "compares numbers"),
    (with_rule(when=[{"field": "amount", "op": ">", "value": NAN}]), "NaN"),
    (with_rule(when=[{"field": "amount", "op": ">", "value": [1]}]), "number or a string"),
    (with_rule(when=[{"field": "key", "op": "in", "value": "acct-1"}]), "needs a list value"),
    (with_rule(when=[{"field": "key", "op": "in", "value": ["a", 1]}]), "mixes numbers and strings"),
    (with_rule(when=[{"field": "key", "op": "in", "value": [{"a": 1}]}]), "number or a string"),
    (with_rule(when=[{"field": "a", "op": "==", "value": 1, "unit": "EUR"}]), "unknown key(s) unit"),
    (with_rule(when=[3]), "rule 'limit': when[0]: must be a table"),
    (
        with_rule(when=[{"field": "a", "op": "==", "value": 1}], any=[[{"field": "a", "op": "==", "value": "x"}]]),
        "rule 'limit': field 'a' is compared with text here but with number in rule 'limit'",
    ),
    (
        {
            "default": "allow",
            "rules": [
                GOOD_RULE,
                {**GOOD_RULE, "name": "named", "when": [{"field": "amount", "op": "==", "value": "x"}]},
            ],
        },
        "rule 'named': field 'amount' is compared with text here but with number in rule 'limit'",
    ),
    ("not a table", "must be a table"),
]


@pytest.mark.parametrize(("table", "fragment"), BAD_TABLES)
def test_parse_errors_are_one_line_naming_the_rule(table: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(table, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ") and "\n" not in message
    assert fragment in message


MUTATIONS = ["unknown-op", "no-decision", "duplicate-name", "bad-mode", "no-rules", "no-conditions", "bad-value"]


@given(rule_tables(), st.sampled_from(MUTATIONS), st.data())
def test_any_broken_table_is_a_one_line_config_error(table: dict[str, Any], mutation: str, data: st.DataObject) -> None:
    rules = table["rules"]
    index = data.draw(st.integers(0, len(rules) - 1))
    rule = rules[index]
    if mutation == "unknown-op":
        rule["when"] = [*rule.get("when", []), {"field": "a", "op": data.draw(st.sampled_from(["=", "<>", "IN"]))}]
    elif mutation == "no-decision":
        del rule["decision"]
    elif mutation == "duplicate-name":
        rules.append(dict(rule))
    elif mutation == "bad-mode":
        table["mode"] = data.draw(st.sampled_from(["first_match", "Priority", "", 1]))
    elif mutation == "no-rules":
        table["rules"] = []
    elif mutation == "no-conditions":
        rule.pop("any", None)
        rule["when"] = []
    else:
        rule["when"] = [*rule.get("when", []), {"field": "b", "op": ">", "value": "text"}]
    with pytest.raises(ConfigError) as caught:
        parse_rules(table, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ") and "\n" not in message
    if mutation not in ("bad-mode", "no-rules"):
        assert f"rule '{rule['name']}'" in message
