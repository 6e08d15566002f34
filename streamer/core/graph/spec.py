"""Scoring graphs declared in TOML: named stages, their edges, and the checks that make a graph servable.

A graph file (``graphs/NAME.toml``) names the request features it reads (``inputs``), the stage whose score and
label the prediction carries (``output``) and its stages::

    name = "fraud-graph"
    version = 1
    inputs = ["amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days"]
    output = "phases"

    [stages.account]                      # enrichment: entity features from Redis by the request key
    kind = "enrich"
    entity = "account"
    key = "key"                           # or the name of a request feature
    features = { chargebacks_90d = 0.0 }  # feature = default on a miss
    [stages.derived]
    kind = "transform"
    ops = [{ op = "log1p", input = "amount", output = "log_amount" }]
    [stages.phases]                       # two-phase: the cheap model answers the rows it is sure of
    kind = "cascade"
    first = "fraud-online"
    then = "fraud"
    low = 0.02
    high = 0.6
    [stages.decide]
    kind = "rules"
    ...                                   # core.rules

Stage kinds: ``model`` (``model = "name"`` or ``"name@version"``: pins and canary splits apply as for a
request), ``transform`` (``core.transforms``), ``enrich``, ``ensemble`` (``members`` = scoring stages,
``method`` = mean | weighted | vote | max | stack, ``weights``, ``model`` for stack), ``cascade`` and ``rules``.
Every stage writes named columns: a scoring stage (model, ensemble, cascade) its score as ``<stage>`` and its
label as ``<stage>.label`` (a cascade also ``<stage>.path``: "first" or "then"); a transform or an enrichment
the features it names; rules the decision and reasons. Edges come from what a stage reads (``members``, the
columns of rules, transforms and model features) plus an explicit ``after``.

``check`` validates a graph against the loaded model cards: a cycle, an unknown model or stage, a feature that
no input or earlier stage provides, an ensemble or cascade over a model that is not a binary classifier, or a
missing output -- each one ``ConfigError`` naming the graph and the stage. Pure: the worker loads files and
hands the tables in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ConfigError
from streamer.core.graph import rules as rules_module
from streamer.core.graph import transforms as transforms_module

KINDS = ("model", "transform", "enrich", "ensemble", "cascade", "rules")
SCORING_KINDS = ("model", "ensemble", "cascade")
ENSEMBLE_METHODS = ("mean", "weighted", "vote", "max", "stack")
BINARY = "binary-classification"


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage. ``spec`` holds the kind's own settings, already parsed (see ``parse_graph``)."""

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
    ops: tuple[transforms_module.Op, ...] = ()  # transform
    rules: rules_module.RuleSet | None = None  # rules
    threshold: float = 0.5  # ensemble: label = score >= threshold (vote: a majority)

    def reads(self) -> set[str]:
        """The columns this stage reads (before checking them against what the graph provides)."""
        if self.kind == "transform":
            return transforms_module.inputs_of(self.ops)
        if self.kind == "rules":
            assert self.rules is not None
            return rules_module.fields_of(self.rules)
        if self.kind == "ensemble":
            return set(self.members)
        if self.kind == "enrich" and self.key != "key":
            return {self.key}
        return set()

    def writes(self) -> tuple[str, ...]:
        if self.kind in SCORING_KINDS:
            return (self.name, f"{self.name}.label") + ((f"{self.name}.path",) if self.kind == "cascade" else ())
        if self.kind == "transform":
            return transforms_module.outputs_of(self.ops)
        if self.kind == "enrich":
            return tuple(name for name, _ in self.defaults)
        return ()


@dataclass(frozen=True, slots=True)
class GraphSpec:
    name: str
    version: int
    inputs: tuple[str, ...]
    output: str
    stages: Mapping[str, Stage]
    order: tuple[str, ...]  # a topological order of the stages
    description: str = ""
    threshold: float = 0.5
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def edges(self) -> list[tuple[str, str]]:
        """(from, to) pairs: what each stage depends on."""
        return [(dep, name) for name in self.order for dep in _depends(self, self.stages[name])]


def _depends(spec: GraphSpec | None, stage: Stage, stages: Mapping[str, Stage] | None = None) -> set[str]:
    stages = spec.stages if spec is not None else stages
    assert stages is not None
    producers = {column: name for name, s in stages.items() for column in s.writes()}
    deps = set(stage.after)
    deps.update(producers[c] for c in stage.reads() if c in producers and producers[c] != stage.name)
    return deps


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of names")
    return tuple(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)


_STAGE_KEYS = {
    "model": {"model"},
    "transform": {"ops"},
    "enrich": {"entity", "key", "features"},
    "ensemble": {"members", "method", "weights", "model", "threshold"},
    "cascade": {"first", "then", "low", "high"},
    "rules": None,  # core.rules checks its own keys
}


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _parse_stage(name: str, table: Mapping[str, Any], where: str) -> Stage:
    where = f"{where} stage {name!r}"
    if not _NAME.match(name) or name == "key":
        raise ConfigError(f"{where}: a stage name is letters, digits, '_', '.', '-' (and not 'key')")
    kind = table.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    after = _strings(table.get("after", []), f"{where}: after")
    own = {k: v for k, v in table.items() if k not in ("kind", "after")}
    known = _STAGE_KEYS[kind]
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
        features = _table(own.get("features"), f"{where}: features")
        if not features:
            raise ConfigError(f"{where}: needs features = {{ name = default, ... }}")
        defaults = tuple((str(k), _number(v, f"{where}: features.{k}")) for k, v in features.items())
        entity = own.get("entity", "")
        key = own.get("key", "key")
        if not isinstance(entity, str) or not entity or not isinstance(key, str):
            raise ConfigError(f'{where}: needs entity = "..." (and key = "key" or a request feature)')
        return Stage(name, kind, after, entity=entity, key=key, defaults=defaults)
    if kind == "ensemble":
        members = _strings(own.get("members", []), f"{where}: members")
        method = own.get("method", "mean")
        if method not in ENSEMBLE_METHODS:
            raise ConfigError(f"{where}: method must be one of {', '.join(ENSEMBLE_METHODS)}, got {method!r}")
        if len(members) < 2:
            raise ConfigError(f"{where}: an ensemble needs at least two members")
        weights = tuple(_number(w, f"{where}: weights") for w in own.get("weights", []))
        if method == "weighted" and (len(weights) != len(members) or sum(weights) <= 0 or min(weights) < 0):
            raise ConfigError(f"{where}: weighted needs one non-negative weight per member, summing above 0")
        model = own.get("model")
        if (method == "stack") != isinstance(model, str):
            raise ConfigError(f'{where}: method = "stack" and model = "..." go together')
        threshold = _number(own.get("threshold", 0.5), f"{where}: threshold")
        return Stage(
            name, kind, after, model=model, members=members, method=method, weights=weights, threshold=threshold
        )
    if kind == "cascade":
        first, then = own.get("first"), own.get("then")
        if not isinstance(first, str) or not isinstance(then, str):
            raise ConfigError(f'{where}: needs first = "cheap model" and then = "heavy model"')
        low, high = _number(own.get("low", 0.0), f"{where}: low"), _number(own.get("high", 1.0), f"{where}: high")
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"{where}: needs 0 <= low <= high <= 1, got low={low}, high={high}")
        return Stage(name, kind, after, first=first, then=then, low=low, high=high)
    return Stage(name, kind, after, rules=rules_module.parse_rules(own, where))


def parse_graph(table: Mapping[str, Any], where: str) -> GraphSpec:
    """A graph from its TOML table; structure only (``check`` validates it against the models)."""
    name = table.get("name")
    if not isinstance(name, str) or not name or "@" in name:
        raise ConfigError(f'{where}: needs name = "..." (without @)')
    where = f"{where} (graph {name})"
    version = table.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{where}: version must be a positive integer")
    inputs = _strings(table.get("inputs", []), f"{where}: inputs")
    if not inputs:
        raise ConfigError(f"{where}: needs inputs = [the request features it reads]")
    stages_table = _table(table.get("stages"), f"{where}: [stages]")
    if not stages_table:
        raise ConfigError(f"{where}: has no stages")
    stages = {str(n): _parse_stage(str(n), _table(t, f"{where} stage {n!r}"), where) for n, t in stages_table.items()}
    known = {"name", "version", "inputs", "output", "stages", "description", "threshold"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    for stage in stages.values():
        missing = [a for a in (*stage.after, *stage.members) if a not in stages]
        if missing:
            raise ConfigError(f"{where} stage {stage.name!r}: no stage named {missing[0]!r}")
    scoring = [s.name for s in stages.values() if s.kind in SCORING_KINDS]
    output = table.get("output", scoring[0] if len(scoring) == 1 else None)
    if not isinstance(output, str) or output not in stages or stages[output].kind not in SCORING_KINDS:
        choices = ", ".join(scoring)
        raise ConfigError(f"{where}: output must name a model, ensemble or cascade stage (one of: {choices})")
    if sum(1 for s in stages.values() if s.kind == "rules") > 1:
        raise ConfigError(f"{where}: at most one rules stage decides")
    graph = {n: _depends(None, s, stages) for n, s in stages.items()}
    try:
        order = tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ConfigError(f"{where}: the stages form a cycle ({cycle})") from None
    threshold = _number(table.get("threshold", 0.5), f"{where}: threshold")
    description = str(table.get("description", ""))
    return GraphSpec(name, version, inputs, output, stages, order, description, threshold, where)


Resolve = Callable[[str], ModelCard]


def check(spec: GraphSpec, resolve: Resolve) -> None:
    """Raise ``ConfigError`` naming the stage unless every stage can run on what comes before it.

    ``resolve`` gives the card a model reference serves (raising ``DecodeError``/``LookupError`` when none):
    every version a canary could choose has the champion's features, so checking the champion's is enough for a
    split of compatible versions.
    """
    where = spec.source or f"graph {spec.name}"
    available = set(spec.inputs) | {"key"}
    for name in spec.order:
        stage = spec.stages[name]
        here = f"{where} stage {name!r}"
        cards = []
        for ref in (stage.model, stage.first, stage.then):
            if ref is None:
                continue
            try:
                cards.append(resolve(ref))
            except Exception as exc:  # DecodeError (unknown model or version) or LookupError
                raise ConfigError(f"{here}: {getattr(exc, 'detail', exc)}") from None
        for card in cards:
            needed = card.features if not (stage.kind == "ensemble" and stage.method == "stack") else ()
            missing = [f for f in needed if f not in available]
            if missing:
                raise ConfigError(
                    f"{here}: model {card.ref} needs feature {missing[0]!r}, which neither the graph's inputs nor "
                    "an earlier stage provides"
                )
            if stage.kind in ("ensemble", "cascade") and card.task != BINARY:
                raise ConfigError(f"{here}: {card.ref} is a {card.task} model; this stage needs a binary classifier")
        if stage.kind == "ensemble":
            not_scoring = [m for m in stage.members if spec.stages[m].kind not in SCORING_KINDS]
            if not_scoring:
                raise ConfigError(f"{here}: member {not_scoring[0]!r} is not a model, ensemble or cascade stage")
            if stage.method == "stack":
                stacker = cards[0]
                if tuple(stacker.features) != stage.members:
                    raise ConfigError(
                        f"{here}: the stacking model {stacker.ref} reads {list(stacker.features)}; its features must "
                        f"be the members' scores in order: {list(stage.members)}"
                    )
        missing = sorted(stage.reads() - available)
        if missing:
            raise ConfigError(
                f"{here}: reads {missing[0]!r}, which neither the graph's inputs nor an earlier stage provides"
            )
        clash = [c for c in stage.writes() if c in available and c != "key"]
        if clash:
            raise ConfigError(f"{here}: writes {clash[0]!r}, which an input or an earlier stage already provides")
        available.update(stage.writes())


def card_of(spec: GraphSpec, task: str = BINARY) -> ModelCard:
    """The card a graph is served under: requests route to ``name`` or ``name@version`` like a model's, read the
    graph's inputs, and the prediction carries the output stage's score and label."""
    return ModelCard(
        spec.name,
        spec.version,
        task,
        spec.inputs,
        "",
        "",
        OutputRef("score"),
        OutputRef("label"),
        threshold=spec.threshold,
        card={"graph": spec.description or spec.ref},
    )


def describe(spec: GraphSpec) -> list[str]:
    """The graph as text, one line per stage in execution order (``streamer graph show``)."""
    lines = [f"graph {spec.ref}: inputs {', '.join(spec.inputs)}; output {spec.output}"]
    for name in spec.order:
        stage = spec.stages[name]
        deps = sorted(_depends(spec, stage))
        what = _what(stage)
        lines.append(f"  {name}: {what}" + (f"  <- {', '.join(deps)}" if deps else ""))
    return lines


def to_dot(spec: GraphSpec) -> str:
    """Graphviz source of the graph (``streamer graph show --svg``)."""
    shapes = {"model": "box", "transform": "ellipse", "enrich": "cylinder", "ensemble": "hexagon"}
    shapes |= {"cascade": "diamond", "rules": "octagon"}
    lines = [f'digraph "{spec.ref}" {{', "  rankdir=LR;", '  input [shape=plaintext, label="request"];']
    for name in spec.order:
        stage = spec.stages[name]
        label = _what(stage).replace('"', "'")
        lines.append(f'  "{name}" [shape={shapes[stage.kind]}, label="{name}\\n{label}"];')
    for name in spec.order:
        deps = _depends(spec, spec.stages[name])
        if not deps:
            lines.append(f'  input -> "{name}";')
        lines += [f'  "{dep}" -> "{name}";' for dep in sorted(deps)]
    lines.append(f'  "{spec.output}" -> prediction;')
    lines.append("  prediction [shape=plaintext];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _what(stage: Stage) -> str:
    """One line on what a stage does (``describe``)."""
    if stage.kind == "model":
        return f"model {stage.model}"
    if stage.kind == "transform":
        return "transform -> " + ", ".join(transforms_module.outputs_of(stage.ops))
    if stage.kind == "enrich":
        return f"enrich {stage.entity} by {stage.key} -> " + ", ".join(n for n, _ in stage.defaults)
    if stage.kind == "ensemble":
        return f"ensemble {stage.method} of {', '.join(stage.members)}" + (f" by {stage.model}" if stage.model else "")
    if stage.kind == "cascade":
        return f"cascade {stage.first} -> {stage.then} when {stage.low} <= score <= {stage.high}"
    assert stage.rules is not None
    return f"rules ({stage.rules.mode}, {len(stage.rules.rules)} rules, default {stage.rules.default})"


def member_weights(stage: Stage) -> Sequence[float]:
    if stage.method == "weighted":
        total = sum(stage.weights)
        return [w / total for w in stage.weights]
    return [1.0 / len(stage.members)] * len(stage.members)
