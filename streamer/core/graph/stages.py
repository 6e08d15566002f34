"""One stage of a scoring graph: its settings as declared in TOML, what it reads and what it writes.

A stage's table is ``kind``, an optional ``after`` (stages it must follow whatever it reads) and the kind's own
keys (``STAGE_KEYS``); an unknown key is refused, so a misspelt setting never silently takes its default.

What a stage reads and writes is what the graph's edges and checks are made of (``core.graph.spec``):

- it *reads* the columns its kind names (the ops' inputs, the rules' fields, an ensemble's members, an
  enrichment's key feature) and the features of the models it runs (``features``, empty until the graph is
  bound to the loaded model cards: ``spec.bind``);
- it *writes* named columns: a scoring stage (model, ensemble, cascade) ``<stage>`` and ``<stage>.label`` (a
  cascade also ``<stage>.path``), a transform its ops' outputs, an enrichment its features and
  ``<stage>.enrichment`` (``STORE``, ``MISSING`` or ``FAILED`` per row), rules nothing (the prediction's
  ``decision`` and ``reasons``).

Pure: parsing raises ``ConfigError`` with one line naming the stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from streamer.core.errors import ConfigError
from streamer.core.graph import rules as rules_module
from streamer.core.graph import transforms as transforms_module
from streamer.core.outputs import EnrichmentOutcome

KINDS = ("model", "transform", "enrich", "ensemble", "cascade", "rules")
SCORING_KINDS = ("model", "ensemble", "cascade")
ENSEMBLE_METHODS = ("mean", "weighted", "vote", "max", "stack")

# An enrichment's outcome per row, worst last (a graph reports the worst of its enrichments): the entity's
# features came from the store; the store answered but knows no such entity (or the row has no key); the store
# did not answer (an error, a timeout, or the breaker skipping it after one) -- the row has its defaults.
ENRICHMENT_OUTCOMES: tuple[str, ...] = get_args(EnrichmentOutcome)  # the prediction's values, in this order
STORE, MISSING, FAILED = ENRICHMENT_OUTCOMES
# What an enrichment does with the rows whose lookup failed (``on_failure``): decide on the defaults (fail
# open), dead-letter them (``enrichment-failed``), or force the decision ``REVIEW`` whatever the rules say.
DEFAULTS, DEAD_LETTER, REVIEW = "defaults", "dead-letter", "review"
ON_FAILURE = (DEFAULTS, DEAD_LETTER, REVIEW)
DEFAULT_TIMEOUT_MS = 50.0
MAX_TIMEOUT_MS = 10_000.0

STAGE_KEYS: dict[str, frozenset[str] | None] = {
    "model": frozenset({"model"}),
    "transform": frozenset({"ops"}),
    "enrich": frozenset({"entity", "key", "features", "on_failure", "timeout_ms"}),
    "ensemble": frozenset({"members", "method", "weights", "model", "threshold"}),
    "cascade": frozenset({"first", "then", "low", "high"}),
    "rules": None,  # core.rules checks its own keys
}

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage. The kind's own settings are parsed (``parse_stage``); ``features`` is bound later."""

    name: str
    kind: str
    after: tuple[str, ...] = ()
    model: str | None = None  # model, stack ensemble
    members: tuple[str, ...] = ()  # ensemble
    method: str = "mean"  # ensemble
    weights: tuple[float, ...] = ()  # weighted ensemble
    first: str | None = None  # cascade
    then: str | None = None  # cascade
    low: float = 0.0  # cascade: a first-phase score below low or above high is sure enough
    high: float = 1.0
    entity: str = ""  # enrich
    key: str = "key"  # enrich: "key" (the request key) or a request feature
    defaults: tuple[tuple[str, float], ...] = ()  # enrich: feature, default
    on_failure: str = ""  # enrich: one of ON_FAILURE ("": not declared; the graph chooses, see spec.parse_graph)
    timeout_ms: float = DEFAULT_TIMEOUT_MS  # enrich: how long a lookup may wait for the store
    ops: tuple[transforms_module.Op, ...] = ()  # transform
    rules: rules_module.RuleSet | None = None  # rules
    threshold: float = 0.5  # ensemble: label = score >= threshold (vote: a strict majority)
    # The features of the models this stage runs (a model's; both of a cascade's), from their cards: empty until
    # the graph is bound (``spec.bind``). A stacking ensemble's model reads the members' scores: none here.
    features: tuple[str, ...] = ()

    def reads(self) -> set[str]:
        """The columns this stage reads (before checking them against what the graph provides)."""
        read = set(self.features)
        if self.kind == "transform":
            read |= transforms_module.inputs_of(self.ops)
        elif self.kind == "rules":
            assert self.rules is not None
            read |= rules_module.fields_of(self.rules)
        elif self.kind == "ensemble":
            read |= set(self.members)
        elif self.kind == "enrich" and self.key != "key":
            read.add(self.key)
        return read

    def writes(self) -> tuple[str, ...]:
        if self.kind in SCORING_KINDS:
            return (self.name, f"{self.name}.label") + ((f"{self.name}.path",) if self.kind == "cascade" else ())
        if self.kind == "transform":
            return transforms_module.outputs_of(self.ops)
        if self.kind == "enrich":
            return (*(name for name, _ in self.defaults), f"{self.name}.enrichment")
        return ()

    def model_refs(self) -> tuple[str, ...]:
        """The models this stage runs (``name`` or ``name@version``)."""
        return tuple(ref for ref in (self.model, self.first, self.then) if ref is not None)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table")
    return value


def strings(value: Any, where: str) -> tuple[str, ...]:
    """A name or a list of names."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of names")
    return tuple(value)


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)


def parse_stage(name: str, table: Mapping[str, Any], where: str) -> Stage:
    """One stage from its TOML table; ``where`` names the graph (the stage is added)."""
    where = f"{where} stage {name!r}"
    if not _NAME.match(name) or name == "key":
        raise ConfigError(f"{where}: a stage name is letters, digits, '_', '.', '-' (and not 'key')")
    table = _table(table, where)
    kind = table.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    after = strings(table.get("after", []), f"{where}: after")
    own = {k: v for k, v in table.items() if k not in ("kind", "after")}
    known = STAGE_KEYS[kind]
    if known is not None:
        unknown = sorted(set(own) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} for a {kind} stage")
    if kind == "model":
        if not isinstance(own.get("model"), str):
            raise ConfigError(f'{where}: needs model = "name" or "name@version"')
        return Stage(name, kind, after, model=own["model"])
    if kind == "transform":
        items = own.get("ops")
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: needs ops = [ {{ op = ..., input = ..., output = ... }}, ... ]")
        return Stage(name, kind, after, ops=transforms_module.parse_ops(items, where))
    if kind == "enrich":
        return _enrich(name, after, own, where)
    if kind == "ensemble":
        return _ensemble(name, after, own, where)
    if kind == "cascade":
        first, then = own.get("first"), own.get("then")
        if not isinstance(first, str) or not isinstance(then, str):
            raise ConfigError(f'{where}: needs first = "cheap model" and then = "heavy model"')
        low, high = number(own.get("low", 0.0), f"{where}: low"), number(own.get("high", 1.0), f"{where}: high")
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"{where}: needs 0 <= low <= high <= 1, got low={low}, high={high}")
        return Stage(name, kind, after, first=first, then=then, low=low, high=high)
    return Stage(name, kind, after, rules=rules_module.parse_rules(own, where))


def _enrich(name: str, after: tuple[str, ...], own: Mapping[str, Any], where: str) -> Stage:
    features = _table(own.get("features"), f"{where}: features")
    if not features:
        raise ConfigError(f"{where}: needs features = {{ name = default, ... }}")
    defaults = tuple((str(k), number(v, f"{where}: features.{k}")) for k, v in features.items())
    entity = own.get("entity", "")
    key = own.get("key", "key")
    if not isinstance(entity, str) or not entity or not isinstance(key, str):
        raise ConfigError(f'{where}: needs entity = "..." (and key = "key" or a request feature)')
    on_failure = own.get("on_failure", "")
    if on_failure not in ON_FAILURE and on_failure != "":
        choices = " | ".join(f'"{c}"' for c in ON_FAILURE)
        raise ConfigError(f"{where}: on_failure must be {choices}, got {on_failure!r}")
    timeout_ms = number(own.get("timeout_ms", DEFAULT_TIMEOUT_MS), f"{where}: timeout_ms")
    if not 0 < timeout_ms <= MAX_TIMEOUT_MS:  # NaN fails too
        raise ConfigError(f"{where}: timeout_ms must be above 0 and at most {MAX_TIMEOUT_MS:g}, got {timeout_ms:g}")
    return Stage(
        name, "enrich", after, entity=entity, key=key, defaults=defaults, on_failure=on_failure, timeout_ms=timeout_ms
    )


def _ensemble(name: str, after: tuple[str, ...], own: Mapping[str, Any], where: str) -> Stage:
    members = strings(own.get("members", []), f"{where}: members")
    method = own.get("method", "mean")
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"{where}: method must be one of {', '.join(ENSEMBLE_METHODS)}, got {method!r}")
    if len(members) < 2:
        raise ConfigError(f"{where}: an ensemble needs at least two members")
    raw_weights = own.get("weights", [])
    if not isinstance(raw_weights, list):
        raise ConfigError(f"{where}: weights must be a list of numbers, one per member")
    weights = tuple(number(w, f"{where}: weights") for w in raw_weights)
    if method == "weighted" and (len(weights) != len(members) or sum(weights) <= 0 or min(weights) < 0):
        raise ConfigError(f"{where}: weighted needs one non-negative weight per member, summing above 0")
    if "weights" in own and method != "weighted":
        raise ConfigError(f'{where}: weights apply to method = "weighted" only, not {method!r}')
    model = own.get("model")
    if (method == "stack") != isinstance(model, str):
        raise ConfigError(f'{where}: method = "stack" and model = "..." go together')
    if "threshold" in own and method in ("vote", "stack"):
        why = "a strict majority of the members' labels" if method == "vote" else "the stacking model's own label"
        raise ConfigError(f"{where}: threshold has no effect with method = {method!r} (the label is {why})")
    threshold = number(own.get("threshold", 0.5), f"{where}: threshold")
    return Stage(
        name, "ensemble", after, model=model, members=members, method=method, weights=weights, threshold=threshold
    )


def member_weights(stage: Stage) -> list[float]:
    """Each member's weight in a mean or weighted ensemble, normalised to sum to 1."""
    if stage.method == "weighted":
        total = sum(stage.weights)
        return [w / total for w in stage.weights]
    return [1.0 / len(stage.members)] * len(stage.members)
