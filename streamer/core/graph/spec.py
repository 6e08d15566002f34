"""Scoring graphs declared in TOML: named stages, the edges between them, and the checks that make a graph
servable. The whole file format is in docs/graphs.md; the stages themselves are ``core.graph.stages``.

A graph file (``graphs/NAME.toml``) names the request features it reads (``inputs``), the stage whose score and
label the prediction carries (``output``) and its stages::

    name = "fraud-graph"
    version = 1
    inputs = ["amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days"]
    output = "phases"

    [stages.account]                      # enrichment: entity features from Redis by the request key
    kind = "enrich"
    entity = "account"
    features = { chargebacks_90d = 0.0 }  # feature = default on a miss
    on_failure = "review"                 # when the store fails: "defaults" | "dead-letter" | "review"
    [stages.derived]
    kind = "transform"
    ops = [{ op = "log1p", input = "amount", output = "log_amount" }]
    [stages.phases]                       # two-phase: the cheap model answers the rows it is sure of
    kind = "cascade"
    first = "fraud-online"
    then = "fraud"
    [stages.decide]
    kind = "rules"
    ...                                   # core.graph.rules

**Edges come from what every stage reads**: the columns its kind names, the features of the models it runs
and an explicit ``after``. A column is produced by the one stage that writes it (``Stage.writes``); a stage
depends on the producer of every column it reads. The models' features are known only from their cards, so
there are two steps:

1. ``parse_graph`` checks the structure alone (kinds, settings, names, the output, a cycle among the edges it
   can see) and orders the stages by those edges;
2. ``bind`` resolves each stage's models against the loaded cards, records their features on the stage, orders
   the stages again by every edge (a cycle is refused here too, naming it) and checks that every stage runs on
   what comes before it. Only a bound graph is served: its ``order`` runs each stage after every producer of
   what it reads, and the order is fixed for the life of the worker (a hot-reloaded model that reads another
   feature fails its rows as ``scoring-failed`` rather than reorder a running graph).

Errors are ``ConfigError``, one line naming the graph and the stage. Pure: the worker loads files and cards and
hands them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from graphlib import CycleError, TopologicalSorter
from typing import Any

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ConfigError
from streamer.core.graph.stages import DEFAULTS, REVIEW, SCORING_KINDS, Stage, number, parse_stage, strings

BINARY = "binary-classification"
# The optional per-row fields of the prediction (``core.outputs``) a stage kind's results fill.
_OPTIONAL_FIELDS = {"rules": ("decision", "reasons"), "enrich": ("enrichment",)}


@dataclass(frozen=True, slots=True)
class GraphSpec:
    name: str
    version: int
    inputs: tuple[str, ...]
    output: str
    stages: Mapping[str, Stage]
    order: tuple[str, ...]  # a topological order of the stages (final once bound)
    description: str = ""
    threshold: float = 0.5
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def dependencies(self) -> dict[str, set[str]]:
        """Each stage's name -> the stages it depends on (the producers of what it reads, and ``after``)."""
        return _dependencies(self.stages)

    def optional_fields(self) -> frozenset[str]:
        """The optional fields of the prediction that this graph's results carry (``decision`` and ``reasons``
        with a rules stage, ``enrichment`` with an enrich stage), so that an answer's metadata can list them."""
        return frozenset(f for s in self.stages.values() for f in _OPTIONAL_FIELDS.get(s.kind, ()))


def _dependencies(stages: Mapping[str, Stage]) -> dict[str, set[str]]:
    producers = {column: name for name, s in stages.items() for column in s.writes()}
    found = {}
    for name, stage in stages.items():
        deps = set(stage.after)
        deps.update(producers[c] for c in stage.reads() if c in producers and producers[c] != name)
        found[name] = deps
    return found


def _order(stages: Mapping[str, Stage], where: str) -> tuple[str, ...]:
    try:
        return tuple(TopologicalSorter(_dependencies(stages)).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ConfigError(f"{where}: the stages form a cycle ({cycle})") from None


def parse_graph(table: Mapping[str, Any], where: str) -> GraphSpec:
    """A graph from its TOML table; structure only (``bind`` adds the models and checks it against them).

    An enrichment that declares no ``on_failure`` gets ``review`` in a graph with a rules stage (fail closed:
    the rules' decision would rest on defaults) and ``defaults`` in one without (there is no decision to force);
    ``review`` declared in a graph without rules is refused."""
    name = table.get("name")
    if not isinstance(name, str) or not name or "@" in name:
        raise ConfigError(f'{where}: needs name = "..." (without @)')
    where = f"{where} (graph {name})"
    version = table.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{where}: version must be a positive integer")
    inputs = strings(table.get("inputs", []), f"{where}: inputs")
    if not inputs:
        raise ConfigError(f"{where}: needs inputs = [the request features it reads]")
    stages_table = table.get("stages")
    if not isinstance(stages_table, Mapping):
        raise ConfigError(f"{where}: [stages]: must be a table")
    if not stages_table:
        raise ConfigError(f"{where}: has no stages")
    stages = {str(n): parse_stage(str(n), t, where) for n, t in stages_table.items()}
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
    deciding = sum(1 for s in stages.values() if s.kind == "rules")
    if deciding > 1:
        raise ConfigError(f"{where}: at most one rules stage decides")
    for stage in stages.values():
        if stage.kind != "enrich":
            continue
        if stage.on_failure == REVIEW and not deciding:
            raise ConfigError(
                f'{where} stage {stage.name!r}: on_failure = "review" needs a rules stage to decide; add one, or use '
                '"dead-letter" or "defaults"'
            )
        if not stage.on_failure:
            stages[stage.name] = replace(stage, on_failure=REVIEW if deciding else DEFAULTS)
    threshold = number(table.get("threshold", 0.5), f"{where}: threshold")
    description = str(table.get("description", ""))
    return GraphSpec(name, version, inputs, output, stages, _order(stages, where), description, threshold, where)


Resolve = Callable[[str], ModelCard]


def bind(spec: GraphSpec, resolve: Resolve) -> GraphSpec:
    """The graph bound to the models it runs: each stage's model features recorded, the stages ordered by every
    edge, and every stage checked to run on what comes before it. Raises ``ConfigError`` naming the stage.

    ``resolve`` gives the card a model reference serves (raising ``DecodeError``/``LookupError`` when none):
    every version a canary could choose has the champion's features, so the champion's are the stage's."""
    where = spec.source or f"graph {spec.name}"
    cards: dict[str, list[ModelCard]] = {}
    stages: dict[str, Stage] = {}
    for name, stage in spec.stages.items():
        cards[name] = []
        for ref in stage.model_refs():
            try:
                cards[name].append(resolve(ref))
            except Exception as exc:  # DecodeError (unknown model or version) or LookupError
                raise ConfigError(f"{where} stage {name!r}: {getattr(exc, 'detail', exc)}") from None
        stacking = stage.kind == "ensemble" and stage.method == "stack"  # reads the members' scores
        features = () if stacking else tuple(dict.fromkeys(f for card in cards[name] for f in card.features))
        stages[name] = replace(stage, features=features)
    bound = replace(spec, stages=stages, order=_order(stages, where))
    _check(bound, cards, where)
    return bound


def _check(spec: GraphSpec, cards: Mapping[str, list[ModelCard]], where: str) -> None:
    """Walk the stages in order: each one's models, members and columns against what exists before it."""
    available = set(spec.inputs) | {"key"}
    for name in spec.order:
        stage = spec.stages[name]
        here = f"{where} stage {name!r}"
        for card in cards[name]:  # a stacking model's features are the members' scores: checked as members
            missing = [f for f in card.features if f in stage.features and f not in available]
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
                stacker = cards[name][0]
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
