"""Graph edges come from what every stage reads, its models' features included (``core.graph.spec.bind``).

Random DAGs whose model and cascade stages read features that earlier transforms derive (and earlier models'
scores), declared in a random file order: every one is accepted, runs each stage after everything it reads
exists, and scores every row as a naive evaluator that follows the generation order does. Making the root of a
model's feature chain read that model's own score closes a cycle that only the models' cards reveal: ``bind``
refuses it, naming the stages of the cycle. The shipped example whose model reads a derived feature is bound and
run the same way.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ConfigError
from streamer.core.graph.drawing import describe
from streamer.core.graph.execution import run_graph
from streamer.core.graph.spec import bind, parse_graph
from streamer.core.routing import Catalog
from tests.conftest import REPO

INPUTS = ("a", "b")
LOW, HIGH = 0.4, 0.6


def card(name: str, features: tuple[str, ...]) -> ModelCard:
    return ModelCard(
        name, 1, "binary-classification", features, "x", "0" * 64, OutputRef("probabilities", 1), OutputRef("label")
    )


def infer(model: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    """A deterministic logistic model: weights from the position of each feature, a bias from the name."""
    weights = np.linspace(0.5, -0.5, x.shape[1]) + 0.1 * len(model.name)
    p = 1 / (1 + np.exp(-(x.astype(np.float64) @ weights)))
    return {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1).astype(np.float32)}


def p_of(model: ModelCard, columns: dict[str, np.ndarray]) -> np.ndarray:
    matrix = np.column_stack([columns[f] for f in model.features]).astype(np.float32)
    return infer(model, matrix)["probabilities"][:, 1].astype(np.float64)


@dataclass
class Drawn:
    """A graph drawn in generation order (a topological order by construction), its models and a reference run."""

    stages: dict[str, dict] = field(default_factory=dict)
    models: dict[str, ModelCard] = field(default_factory=dict)
    reads: dict[str, set[str]] = field(default_factory=dict)  # stage -> the columns it reads, model features too
    writes: dict[str, str] = field(default_factory=dict)  # column -> the stage that writes it

    def naive(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every column, computing the stages in generation order, one rule per kind."""
        columns = {name: x[:, i].astype(np.float64) for i, name in enumerate(INPUTS)}
        for name, table in self.stages.items():
            if table["kind"] == "transform":
                op = table["ops"][0]
                columns[op["output"]] = np.clip(columns[op["input"]], op["low"], op["high"])
            elif table["kind"] == "model":
                columns[name] = p_of(self.models[table["model"]], columns)
            else:  # cascade
                first = p_of(self.models[table["first"]], columns)
                then = p_of(self.models[table["then"]], columns)
                columns[name] = np.where((first >= LOW) & (first <= HIGH), then, first)
        return columns


@st.composite
def dags(draw: st.DrawFn) -> Drawn:
    """Stage i reads only what the inputs and stages 0..i-1 provide; the last stage is a scoring one, and at
    least one model reads a derived feature."""
    drawn = Drawn()
    available = list(INPUTS)
    count = draw(st.integers(2, 8), label="stages")
    for i in range(count):
        kind = "model" if i == count - 1 else draw(st.sampled_from(["transform", "model", "cascade"]), label="kind")
        derived = [c for c in available if c not in INPUTS]
        if kind == "transform":
            source = draw(st.sampled_from(available), label=f"t{i} input")
            output = f"d{i}"
            drawn.stages[f"t{i}"] = {
                "kind": "transform",
                "ops": [{"op": "clip", "input": source, "output": output, "low": -2.0, "high": 2.0}],
            }
            drawn.reads[f"t{i}"], drawn.writes[output] = {source}, f"t{i}"
            available.append(output)
            continue
        names = [f"m{i}"] if kind == "model" else [f"m{i}first", f"m{i}then"]
        reads: set[str] = set()
        for model in names:
            features = draw(st.lists(st.sampled_from(available), min_size=1, max_size=4, unique=True), label=model)
            if i == count - 1 and derived and not any(f in derived for f in features):
                features.append(derived[-1])  # a model that reads a derived feature, in every example with one
            drawn.models[model] = card(model, tuple(features))
            reads.update(features)
        stage = f"s{i}"
        if kind == "model":
            drawn.stages[stage] = {"kind": "model", "model": names[0]}
        else:
            drawn.stages[stage] = {"kind": "cascade", "first": names[0], "then": names[1], "low": LOW, "high": HIGH}
        drawn.reads[stage], drawn.writes[stage] = reads, stage
        available.append(stage)
    return drawn


def graph_table(stages: dict[str, dict], output: str) -> dict:
    return {"name": "g", "version": 1, "inputs": list(INPUTS), "output": output, "stages": stages}


@settings(max_examples=150)
@given(drawn=dags(), data=st.data())
def test_every_valid_graph_is_accepted_and_runs_each_stage_after_what_it_reads(
    drawn: Drawn, data: st.DataObject
) -> None:
    names = list(drawn.stages)
    shuffled = data.draw(st.permutations(names), label="file order")
    catalog = Catalog({name: {1: model} for name, model in drawn.models.items()})
    spec = bind(parse_graph(graph_table({k: drawn.stages[k] for k in shuffled}, names[-1]), "g.toml"), catalog.resolve)
    position = {name: k for k, name in enumerate(spec.order)}
    for stage, reads in drawn.reads.items():
        for column in reads:
            if column in drawn.writes:
                assert position[drawn.writes[column]] < position[stage], (stage, column, spec.order)
    x = data.draw(st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=1, max_size=30), label="rows")
    matrix = np.array(x, dtype=np.float32)
    keys = [f"k{i}".encode() for i in range(len(x))]
    done = run_graph(spec, matrix, keys, [f"r{i}" for i in range(len(x))], catalog.route, infer)
    want = drawn.naive(matrix)
    for stage, table in drawn.stages.items():
        if table["kind"] != "transform":
            np.testing.assert_allclose(done.result.outputs[stage], want[stage], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(done.result.score, want[names[-1]], rtol=1e-6, atol=1e-9)


@settings(max_examples=150)
@given(drawn=dags(), data=st.data())
def test_a_cycle_through_a_models_features_is_refused_naming_it(drawn: Drawn, data: st.DataObject) -> None:
    """A model stage that reads (through its features, maybe via other transforms) a transform fed only by the
    inputs: make that transform read the model's own score. The structure alone shows no cycle; the cards do."""
    scoring = [s for s, t in drawn.stages.items() if t["kind"] != "transform"]
    closable = [s for s in scoring if _roots(drawn, s)]
    assume(closable)  # no stage reads a feature derived from the inputs: no cycle to close through a model
    stage = data.draw(st.sampled_from(closable), label="model stage")
    root = data.draw(st.sampled_from(sorted(_roots(drawn, stage))), label="transform at the root of its chain")
    stages = dict(drawn.stages)
    op = dict(stages[root]["ops"][0], input=stage)
    stages[root] = {**stages[root], "ops": [op]}
    catalog = Catalog({name: {1: model} for name, model in drawn.models.items()})
    parsed = parse_graph(graph_table(stages, scoring[-1]), "g.toml")  # no cycle in what the file shows
    with pytest.raises(ConfigError, match="the stages form a cycle") as raised:
        bind(parsed, catalog.resolve)
    message = str(raised.value)
    assert "\n" not in message
    path = message[message.index("(", message.index("cycle")) + 1 : message.rindex(")")].split(" -> ")
    assert stage in path and root in path and path[0] == path[-1]


def _roots(drawn: Drawn, stage: str) -> set[str]:
    """The transforms that read only inputs and that ``stage`` reads through a chain of transforms."""
    found: set[str] = set()
    todo = [c for c in drawn.reads[stage] if c in drawn.writes and drawn.writes[c].startswith("t")]
    while todo:
        producer = drawn.writes[todo.pop()]
        (source,) = drawn.reads[producer]
        if source in INPUTS:
            found.add(producer)
        elif drawn.writes[source].startswith("t"):
            todo.append(source)
    return found


def test_the_issues_graph_a_cascade_reading_a_feature_a_transform_derives_is_accepted() -> None:
    """As reported: "stage 'twostep': model accfirst@1 needs feature 'log_amount', which neither the graph's inputs
    nor an earlier stage provides" -- the transform has inputs of its own, and the cascade is declared first."""
    accfirst = card("accfirst", ("log_amount", "b"))
    heavy = card("heavy", ("a", "b"))
    catalog = Catalog({"accfirst": {1: accfirst}, "heavy": {1: heavy}})
    table = graph_table(
        {
            "twostep": {"kind": "cascade", "first": "accfirst", "then": "heavy", "low": LOW, "high": HIGH},
            "logs": {"kind": "transform", "ops": [{"op": "log1p", "input": "a", "output": "log_amount"}]},
        },
        "twostep",
    )
    parsed = parse_graph(table, "g.toml")
    assert parsed.order == ("twostep", "logs")  # what the file alone shows: no edge between them
    spec = bind(parsed, catalog.resolve)
    assert spec.order == ("logs", "twostep") and spec.dependencies()["twostep"] == {"logs"}
    assert spec.stages["twostep"].features == ("log_amount", "b", "a")
    assert "  twostep: cascade accfirst -> heavy when 0.4 <= score <= 0.6  <- logs" in describe(spec)
    x = np.array([[0.5, 1.0], [3.0, -1.0]], dtype=np.float32)
    done = run_graph(spec, x, [b"k1", b"k2"], ["r1", "r2"], catalog.route, infer)
    first = p_of(accfirst, {"log_amount": np.log1p(x[:, 0].astype(np.float64)), "b": x[:, 1].astype(np.float64)})
    unsure = (first >= LOW) & (first <= HIGH)
    second = p_of(heavy, {"a": x[:, 0].astype(np.float64), "b": x[:, 1].astype(np.float64)})
    np.testing.assert_allclose(done.result.score, np.where(unsure, second, first), rtol=1e-6)


def test_a_model_reading_a_feature_that_nothing_provides_is_still_refused_naming_it() -> None:
    catalog = Catalog({"m": {1: card("m", ("a", "ghost"))}})
    with pytest.raises(ConfigError) as raised:
        bind(parse_graph(graph_table({"s": {"kind": "model", "model": "m"}}, "s"), "g.toml"), catalog.resolve)
    assert "stage 's': model m@1 needs feature 'ghost', which neither the graph's inputs nor" in str(raised.value)


def test_the_shipped_example_whose_model_reads_derived_features_binds_and_runs() -> None:
    """``examples/graphs/fraud-cascade.toml`` declares its cascade before the transform its first model reads."""
    path = REPO / "examples" / "graphs" / "fraud-cascade.toml"
    card_path = REPO / "examples" / "models" / "fraud-derived" / "1" / "card.toml"
    derived = tomllib.loads(card_path.read_text())
    models = {
        "fraud-derived": card("fraud-derived", tuple(derived["features"])),
        "fraud": card("fraud", tuple(tomllib.loads(path.read_text())["inputs"])),
    }
    catalog = Catalog({name: {1: model} for name, model in models.items()})
    spec = bind(parse_graph(tomllib.loads(path.read_text()), str(path)), catalog.resolve)
    assert list(spec.stages) == ["phases", "derived"] and spec.order == ("derived", "phases")
    assert {"log_amount", "hour_band=early", "hour_band=late"} <= spec.stages["phases"].reads()
    rows = np.array([[120.0, 3, 0.4, 10.0, 2, 400], [15.0, 14, 0.1, 2.0, 0, 3000]], dtype=np.float32)
    done = run_graph(spec, rows, [b"a", b"b"], ["r1", "r2"], catalog.route, infer)
    assert done.result.outputs["phases.path"].tolist() and np.isfinite(done.result.score).all()
