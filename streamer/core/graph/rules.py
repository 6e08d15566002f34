"""Business rules: declarative conditions on a batch's columns -> a ``decision`` and its ``reasons`` per row.

A rules stage is the last word of a scoring graph: thresholds, allow/deny lists and overrides written in
TOML, evaluated on whole columns at once (one boolean mask per condition, never a per-row interpreter).

Semantics (pinned by ``tests/property/test_rules.py`` against a naive per-row evaluator):

- A rule holds on a row when every condition of ``when`` holds and, if ``any`` is given, every condition of
  at least one of its groups holds (AND of ``when``, OR over ``any`` groups).
- ``first-match``: the first rule, in file order, that holds decides; its reason is the row's only reason.
  ``priority``: every rule that holds contributes its reason, ordered by priority (high first, ties in file
  order); the first of that order decides. No rule holds: ``default`` decides, with ``[default_reason]`` as
  reasons (``[]`` when it is empty). ``RulesResult.rule`` is the deciding rule's index, -1 for the default.
- Missing values (NaN in a number column, ``None`` or NaN in a text column) fail every comparison, ``!=``
  and ``not in`` included; only ``missing`` holds on them (``present`` is its negation).
- A column's kind is fixed by its dtype: float64 (any numeric or bool dtype is widened) is a number column,
  ``object`` (or a numpy string dtype) a text column whose values are ``str``. A condition whose value is of
  the other kind never holds (a row-level element that is not a ``str`` in a text column likewise). Parsing
  refuses what it can see: an ordering op (``<``...) with text, an ``in`` list mixing numbers and text, and a
  field compared with numbers in one place and text in another (``Condition.kind``). A column of the other
  kind than its conditions' is not refused: those conditions never hold.
- TOML booleans are the numbers 1 and 0; NaN is refused as a value (``missing`` says that).

Running on a batch without a column the rules read, or with a column of the wrong length, raises a
non-retriable ``ScoringError``; the graph is expected to have refused that at start through ``fields_of``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.core.errors import ConfigError, ScoringError

OPS = ("<", "<=", ">", ">=", "==", "!=", "in", "not in", "missing", "present")
MODES = ("first-match", "priority")
_ORDERING = frozenset({"<", "<=", ">", ">="})
_LISTS = frozenset({"in", "not in"})
_UNARY = frozenset({"missing", "present"})
_RULESET_KEYS = frozenset({"mode", "default", "default_reason", "rules"})
_RULE_KEYS = frozenset({"name", "when", "any", "decision", "reason", "priority"})
_CONDITION_KEYS = frozenset({"field", "op", "value"})

Scalar = float | str
Value = Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``. ``value`` is a float or str for comparisons, a tuple for ``in``/``not in`` (all
    floats or all strs), None for ``missing``/``present``. Hashable, so equal conditions are computed once."""

    field: str
    op: str
    value: Value = None

    @property
    def kind(self) -> str | None:
        """``"number"`` or ``"text"``: the column kind the value can match; None when any kind can."""
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        if not values or values[0] is None:
            return None
        return "text" if isinstance(values[0], str) else "number"


@dataclass(frozen=True, slots=True)
class Rule:
    """Holds where all of ``when`` hold and (when ``any`` is non-empty) all of at least one ``any`` group."""

    name: str
    when: tuple[Condition, ...]
    decision: str
    reason: str
    priority: int = 0
    any: tuple[tuple[Condition, ...], ...] = ()

    def conditions(self) -> tuple[Condition, ...]:
        return self.when + tuple(c for group in self.any for c in group)


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    mode: str
    default: str
    default_reason: str = ""

    @property
    def decisions(self) -> tuple[str, ...]:
        """Every decision the set can take: the default first, then the rules' in file order, no repeats."""
        return tuple(dict.fromkeys((self.default, *(r.decision for r in self.rules))))


@dataclass(frozen=True, slots=True)
class RulesResult:
    """Per row: ``decisions[decision[i]]`` decided, by rule ``rule[i]`` (-1: the default), for ``reasons[i]``.

    ``decision`` and ``rule`` are int64 arrays of shape (rows,); each row's reasons list is its own object.
    """

    decisions: tuple[str, ...]
    decision: np.ndarray
    reasons: list[list[str]]
    rule: np.ndarray


# ---------------------------------------------------------------------------------------------- parsing


def _fail(where: str, label: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {label}: {problem}")


def _scalar(value: Any, where: str, label: str) -> Scalar:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        number = float(value)
        if math.isnan(number):
            raise _fail(where, label, "value is NaN; use op = 'missing' for missing values")
        return number
    raise _fail(where, label, f"value must be a number or a string, got {type(value).__name__}")


def _condition(raw: Any, where: str, label: str) -> Condition:
    if not isinstance(raw, Mapping):
        raise _fail(where, label, "must be a table { field, op, value }")
    unknown = sorted(set(raw) - _CONDITION_KEYS)
    if unknown:
        raise _fail(where, label, f"unknown key(s) {', '.join(unknown)}")
    field = raw.get("field")
    if not isinstance(field, str) or not field:
        raise _fail(where, label, "field must be a non-empty string")
    op = raw.get("op")
    if op not in OPS:
        raise _fail(where, label, f"op {op!r} is not one of {', '.join(OPS)}")
    label = f"{label} ({field} {op})"
    if op in _UNARY:
        if "value" in raw:
            raise _fail(where, label, f"op {op!r} takes no value")
        return Condition(field, op)
    if "value" not in raw:
        raise _fail(where, label, f"op {op!r} needs a value")
    raw_value = raw["value"]
    if op in _LISTS:
        if not isinstance(raw_value, list | tuple):
            raise _fail(where, label, f"op {op!r} needs a list value")
        values = tuple(_scalar(v, where, label) for v in raw_value)
        if len({isinstance(v, str) for v in values}) > 1:
            raise _fail(where, label, "the list mixes numbers and strings")
        return Condition(field, op, values)
    value = _scalar(raw_value, where, label)
    if op in _ORDERING and isinstance(value, str):
        raise _fail(where, label, f"op {op!r} compares numbers, got the string {value!r}")
    return Condition(field, op, value)


def _conditions(raw: Any, where: str, label: str) -> tuple[Condition, ...]:
    if not isinstance(raw, list | tuple):
        raise _fail(where, label, "must be a list of conditions")
    return tuple(_condition(c, where, f"{label}[{i}]") for i, c in enumerate(raw))


def _rule(raw: Any, index: int, mode: str, where: str) -> Rule:
    label = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, label, "must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, label, "name must be a non-empty string")
    label = f"rule {name!r}"
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise _fail(where, label, f"unknown key(s) {', '.join(unknown)}")
    decision = raw.get("decision")
    if not isinstance(decision, str) or not decision:
        raise _fail(where, label, "decision must be a non-empty string")
    reason = raw.get("reason", name)
    if not isinstance(reason, str) or not reason:
        raise _fail(where, label, "reason must be a non-empty string")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _fail(where, label, "priority must be an integer")
    if "priority" in raw and mode != "priority":
        raise _fail(where, label, f"priority has no effect in mode {mode!r}; use mode = 'priority'")
    when = _conditions(raw.get("when", []), where, f"{label}: when")
    raw_any = raw.get("any", [])
    if not isinstance(raw_any, list | tuple):
        raise _fail(where, label, "any must be a list of condition lists")
    groups = tuple(_conditions(g, where, f"{label}: any[{i}]") for i, g in enumerate(raw_any))
    if any(not g for g in groups):
        raise _fail(where, label, "an any group is empty")
    if not when and not groups:
        raise _fail(where, label, "has no conditions (the default covers rows no rule matches)")
    return Rule(name, when, decision, reason, priority, groups)


def parse_rules(table: Mapping[str, Any], where: str) -> RuleSet:
    """Validate a rules stage's TOML table (without the graph's own keys); every error is one line,
    ``{where}: rule 'NAME': problem``, naming the rule (or ``rules[i]`` before its name is known)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: a rules stage must be a table")
    unknown = sorted(set(table) - _RULESET_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    mode = table.get("mode", "first-match")
    if mode not in MODES:
        raise ConfigError(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
    default = table.get("default")
    if not isinstance(default, str) or not default:
        raise ConfigError(f"{where}: default (the decision when no rule matches) must be a non-empty string")
    default_reason = table.get("default_reason", "")
    if not isinstance(default_reason, str):
        raise ConfigError(f"{where}: default_reason must be a string")
    raw_rules = table.get("rules")
    if not isinstance(raw_rules, list | tuple) or not raw_rules:
        raise ConfigError(f"{where}: rules must be a non-empty list of rules")
    rules: list[Rule] = []
    names: set[str] = set()
    kinds: dict[str, tuple[str, str]] = {}  # field -> (kind, first rule comparing it so)
    for index, raw in enumerate(raw_rules):
        rule = _rule(raw, index, mode, where)
        if rule.name in names:
            raise _fail(where, f"rule {rule.name!r}", "duplicate rule name")
        names.add(rule.name)
        for condition in rule.conditions():
            kind = condition.kind
            if kind is None:
                continue
            seen = kinds.setdefault(condition.field, (kind, rule.name))
            if seen[0] != kind:
                raise _fail(
                    where,
                    f"rule {rule.name!r}",
                    f"field {condition.field!r} is compared with {kind} here but with {seen[0]} in rule {seen[1]!r}",
                )
        rules.append(rule)
    return RuleSet(tuple(rules), mode, default, default_reason)


def fields_of(rules: RuleSet) -> set[str]:
    """Every column the rules read: the graph refuses a rules stage reading a column nothing provides."""
    return {c.field for rule in rules.rules for c in rule.conditions()}


# ------------------------------------------------------------------------------------------- evaluation


class _Columns:
    """The batch's columns as the rules see them, converted and their missing masks computed once each."""

    def __init__(self, columns: Mapping[str, np.ndarray], rows: int) -> None:
        self._columns = columns
        self._rows = rows
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def get(self, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(column, missing mask, is-str mask for text columns / None for number columns)."""
        found = self._cache.get(field)
        if found is not None:
            return found
        try:
            column = np.asarray(self._columns[field])
        except KeyError:
            raise ScoringError(f"rules read column {field!r}, which the batch does not have") from None
        if column.shape != (self._rows,):
            raise ScoringError(f"rules: column {field!r} has shape {column.shape} for {self._rows} rows")
        if column.dtype.kind in "US":
            column = column.astype(object)
        if column.dtype.kind in "biuf":
            column = column.astype(np.float64, copy=False)
            found = (column, np.isnan(column), None)
        elif column.dtype.kind == "O":
            missing = np.equal(column, None) | (column != column)  # None, or NaN (the only value != itself)
            is_str = np.fromiter(map(isinstance, column, itertools.repeat(str)), bool, self._rows)
            found = (column, missing, is_str)
        else:
            raise ScoringError(f"rules: column {field!r} has dtype {column.dtype}, neither numbers nor text")
        self._cache[field] = found
        return found


def _condition_mask(condition: Condition, columns: _Columns, rows: int) -> np.ndarray:
    column, missing, is_str = columns.get(condition.field)
    op, value = condition.op, condition.value
    if op == "missing":
        return missing
    if op == "present":
        return ~missing
    kind = condition.kind
    if kind is None:  # an empty list: nothing is in it, every present value is not in it
        return ~missing if op == "not in" else np.zeros(rows, dtype=bool)
    if (kind == "text") != (is_str is not None):
        return np.zeros(rows, dtype=bool)  # a number compared with text (or the reverse) never holds
    if is_str is not None:
        # text: only str elements compare; object == / != are elementwise and never raise for str operands
        if op == "==":
            return is_str & (column == value)
        if op == "!=":
            return is_str & (column != value)
        if op not in _LISTS or not isinstance(value, tuple):
            return np.zeros(rows, dtype=bool)  # ordering ops compare numbers only (parse refuses this)
        member = np.fromiter(map(frozenset(value).__contains__, column), bool, rows)
        return is_str & (member if op == "in" else ~member)
    present = ~missing
    if op == "in" or op == "not in":
        member = np.isin(column, np.array(value, dtype=np.float64))
        return present & (member if op == "in" else ~member)
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    if op == "==":
        return column == value
    if op == "!=":
        return present & (column != value)  # NaN != x is true in IEEE, false here
    raise ScoringError(f"rules: unknown op {op!r} on field {condition.field!r}")


def _rule_masks(rules: RuleSet, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
    """(len(rules), rows) bool: where each rule holds. Each distinct condition is computed once."""
    view = _Columns(columns, rows)
    cache: dict[Condition, np.ndarray] = {}

    def mask(condition: Condition) -> np.ndarray:
        found = cache.get(condition)
        if found is None:
            found = cache[condition] = _condition_mask(condition, view, rows)
        return found

    out = np.ones((len(rules.rules), rows), dtype=bool)
    for i, rule in enumerate(rules.rules):
        for condition in rule.when:
            out[i] &= mask(condition)
        if rule.any:
            either = np.zeros(rows, dtype=bool)
            for group in rule.any:
                both = np.ones(rows, dtype=bool)
                for condition in group:
                    both &= mask(condition)
                either |= both
            out[i] &= either
    return out


def evaluate(rules: RuleSet, columns: Mapping[str, np.ndarray], rows: int) -> RulesResult:
    """Decide every row of a batch. Vectorised per rule; the only per-row step is building the reasons lists
    (one list per row, copied from one list per distinct combination of matching rules)."""
    if rules.mode not in MODES:
        raise ScoringError(f"rules: mode {rules.mode!r} is not one of {', '.join(MODES)}")
    decisions = rules.decisions
    index_of = {d: i for i, d in enumerate(decisions)}
    rule_decision = np.array([index_of[r.decision] for r in rules.rules] + [index_of[rules.default]], np.int64)
    default_reasons = [rules.default_reason] if rules.default_reason else []
    masks = _rule_masks(rules, columns, rows)
    count = len(rules.rules)
    if rules.mode == "first-match":
        order = np.arange(count)
    else:
        order = np.array(sorted(range(count), key=lambda i: (-rules.rules[i].priority, i)), dtype=np.int64)
    ordered = masks[order]
    hit = ordered.any(axis=0)
    first = ordered.argmax(axis=0) if count else np.zeros(rows, dtype=np.int64)
    rule = np.where(hit, order[first] if count else first, -1).astype(np.int64)
    decision = rule_decision[rule]  # -1 reads the last entry: the default's
    if rules.mode == "first-match" or rows == 0 or count == 0:
        table = {i: [r.reason] for i, r in enumerate(rules.rules)}
        table[-1] = default_reasons
        reasons = [list(table[i]) for i in rule.tolist()]
    else:
        # rows with the same set of matching rules share their reasons: one list per pattern, copied per row
        sorted_reasons = [rules.rules[i].reason for i in order.tolist()]
        if count <= 63:  # the pattern as one integer: bit j set when the j-th rule in priority order holds
            codes = (ordered.T.astype(np.int64) << np.arange(count, dtype=np.int64)).sum(axis=1)
            patterns, inverse = np.unique(codes, return_inverse=True)
            matches = [[j for j in range(count) if code >> j & 1] for code in patterns.tolist()]
        else:
            packed, inverse = np.unique(np.packbits(ordered.T, axis=1), axis=0, return_inverse=True)
            matches = [np.flatnonzero(np.unpackbits(p, count=count)).tolist() for p in packed]
        lists = [[sorted_reasons[j] for j in matched] if matched else default_reasons for matched in matches]
        reasons = [list(lists[i]) for i in inverse.reshape(-1).tolist()]
    return RulesResult(decisions, decision, reasons, rule)
