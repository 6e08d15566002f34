"""Feature derivations (``core.transforms``): each op and random chains of ops against naive per-row code.

The naive side uses ``math`` on Python floats, one row at a time; the ops run vectorised on numpy columns.
Logs may differ from libm by an ulp, so floats are compared with a tight relative tolerance; NaN must meet
NaN and infinities must agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.errors import ConfigError, ScoringError
from streamer.core.graph.transforms import (
    KINDS,
    Op,
    apply,
    inputs_of,
    outputs_of,
    parse_ops,
)

WHERE = "graphs/fraud.toml: stages.features"
NAN = float("nan")
INF = float("inf")

SPECIAL = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 3.0, NAN, INF, -INF, 5e-324, 1e308, -1e308])
NUMBERS = st.one_of(SPECIAL, st.floats(-1e6, 1e6), st.floats(allow_nan=True, allow_infinity=True))
BOUNDS = st.one_of(st.none(), st.sampled_from([-1, 0, 1, 2.5]), st.floats(-1e6, 1e6))
EDGES = st.lists(st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]), st.floats(-1e3, 1e3)), min_size=1, max_size=6)
CATEGORIES = st.lists(st.sampled_from(["a", "b", "c", "", "long name", "0"]), min_size=1, max_size=5, unique=True)
TEXT_CELLS = st.one_of(st.sampled_from(["a", "b", "c", "", "zz", "0", None, NAN]), st.text(max_size=3))


def close(actual: np.ndarray, expected: list[float]) -> None:
    assert actual.dtype == np.float64 and actual.shape == (len(expected),)
    np.testing.assert_allclose(actual, np.array(expected, dtype=np.float64), rtol=1e-12, atol=0, equal_nan=True)


# --------------------------------------------------------------------------------------- naive, per row


def naive_log(x: float) -> float:
    return math.log(x) if x > 0 else NAN


def naive_log1p(x: float) -> float:
    return math.log1p(x) if x > -1 else NAN


def naive_clip(x: float, low: float | None, high: float | None) -> float:
    if math.isnan(x):
        return NAN
    if low is not None and x < low:
        return float(low)
    if high is not None and x > high:
        return float(high)
    return x


def naive_ratio(numerator: float, denominator: float, default: float | None) -> float:
    if math.isnan(numerator) or math.isnan(denominator):
        return NAN
    if denominator == 0:
        return NAN if default is None else float(default)
    return numerator / denominator


def naive_bucket(x: float, edges: list[float]) -> float:
    if math.isnan(x):
        return NAN
    return float(sum(1 for edge in edges if edge <= x))


def naive_one_hot(cell: Any, categories: list[str]) -> list[float]:
    if isinstance(cell, str):
        return [1.0 if cell == c else 0.0 for c in categories]
    if isinstance(cell, float) and math.isfinite(cell) and cell == int(cell) and 0 <= cell < len(categories):
        return [1.0 if i == int(cell) else 0.0 for i in range(len(categories))]
    return [0.0] * len(categories)


def run_one(op: dict[str, Any], **columns: list[Any]) -> dict[str, np.ndarray]:
    ops = parse_ops([op], WHERE)
    rows = len(next(iter(columns.values())))
    arrays = {
        k: np.array(v, dtype=object if any(isinstance(x, str) or x is None for x in v) else np.float64)
        for k, v in columns.items()
    }
    out = apply(ops, arrays, rows)
    assert tuple(out) == outputs_of(ops)
    return out


# --------------------------------------------------------------------------------------------- each op


@given(st.lists(NUMBERS, max_size=40))
def test_log_and_log1p(values: list[float]) -> None:
    close(run_one({"op": "log", "input": "x", "output": "y"}, x=values)["y"], [naive_log(v) for v in values])
    close(run_one({"op": "log1p", "input": "x", "output": "y"}, x=values)["y"], [naive_log1p(v) for v in values])


@given(st.lists(NUMBERS, max_size=40), BOUNDS, BOUNDS)
def test_clip(values: list[float], low: float | None, high: float | None) -> None:
    if low is None and high is None:
        high = 0.0
    if low is not None and high is not None and low > high:
        low, high = high, low
    op = {"op": "clip", "input": "x", "output": "y"} | ({} if low is None else {"low": low})
    op |= {} if high is None else {"high": high}
    close(run_one(op, x=values)["y"], [naive_clip(v, low, high) for v in values])


@given(st.lists(st.tuples(NUMBERS, NUMBERS), max_size=40), st.one_of(st.none(), st.floats(-10, 10), st.just(0)))
def test_ratio(pairs: list[tuple[float, float]], default: float | None) -> None:
    op = {"op": "ratio", "numerator": "n", "denominator": "d", "output": "r"}
    if default is not None:
        op["default"] = default
    numerators, denominators = [p[0] for p in pairs], [p[1] for p in pairs]
    out = run_one(op, n=numerators, d=denominators)["r"]
    close(out, [naive_ratio(n, d, default) for n, d in pairs])


@given(st.lists(NUMBERS, max_size=40), EDGES)
def test_bucketise_counts_the_edges_at_or_below(values: list[float], edges: list[float]) -> None:
    edges = sorted(set(edges))
    out = run_one({"op": "bucketise", "input": "x", "output": "b", "edges": edges}, x=values)["b"]
    close(out, [naive_bucket(v, edges) for v in values])
    finite = ~np.isnan(np.array(values, dtype=np.float64))
    expected = np.searchsorted(np.array(edges), np.array(values, dtype=np.float64)[finite], side="right")
    assert out[finite].tolist() == expected.astype(float).tolist()  # like searchsorted(side="right")


@given(st.lists(TEXT_CELLS, max_size=40), CATEGORIES)
def test_one_hot_of_text(cells: list[Any], categories: list[str]) -> None:
    column = np.array(cells, dtype=object)
    ops = parse_ops([{"op": "one_hot", "input": "c", "output": "oh", "categories": categories}], WHERE)
    out = apply(ops, {"c": column}, len(cells))
    assert tuple(out) == tuple(f"oh={c}" for c in categories)
    for j, category in enumerate(categories):
        close(out[f"oh={category}"], [naive_one_hot(cell, categories)[j] for cell in cells])
    if cells:
        total = np.sum(list(out.values()), axis=0)
        assert set(total.tolist()) <= {0.0, 1.0}  # at most one category per row


@given(st.lists(st.one_of(NUMBERS, st.integers(-2, 6).map(float)), max_size=40), CATEGORIES)
def test_one_hot_of_category_indices(values: list[float], categories: list[str]) -> None:
    out = run_one({"op": "one_hot", "input": "i", "output": "oh", "categories": categories}, i=values)
    for j, category in enumerate(categories):
        close(out[f"oh={category}"], [naive_one_hot(v, categories)[j] for v in values])


def test_one_hot_reads_numpy_text_and_integer_columns() -> None:
    ops = parse_ops([{"op": "one_hot", "input": "c", "output": "o", "categories": ["x", "y"]}], WHERE)
    text = apply(ops, {"c": np.array(["y", "x", "q"])}, 3)
    assert {k: v.tolist() for k, v in text.items()} == {"o=x": [0.0, 1.0, 0.0], "o=y": [1.0, 0.0, 0.0]}
    ints = apply(ops, {"c": np.array([1, 0, 2, -1], dtype=np.int64)}, 4)
    assert {k: v.tolist() for k, v in ints.items()} == {"o=x": [0.0, 1.0, 0.0, 0.0], "o=y": [1.0, 0.0, 0.0, 0.0]}


def test_the_issue_example_and_the_input_is_never_modified() -> None:
    ops = parse_ops(
        [
            {"op": "log", "input": "amount", "output": "log_amount"},
            {"op": "clip", "input": "log_amount", "output": "clipped", "low": 0, "high": 8},
            {"op": "ratio", "numerator": "amount", "denominator": "balance", "output": "share", "default": 0},
        ],
        WHERE,
    )
    amount = np.array([1.0, math.e**10, -5.0, np.nan])
    balance = np.array([2.0, 0.0, 5.0, 1.0])
    before = amount.copy(), balance.copy()
    out = apply(ops, {"amount": amount, "balance": balance}, 4)
    assert list(out) == ["log_amount", "clipped", "share"]
    close(out["clipped"], [0.0, 8.0, NAN, NAN])
    close(out["share"], [0.5, 0.0, -1.0, NAN])
    assert np.array_equal(amount, before[0], equal_nan=True) and np.array_equal(balance, before[1])
    assert all(not np.shares_memory(v, amount) for v in out.values())


# ---------------------------------------------------------------------------------------------- chains


@st.composite
def chains(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to 7 ops, each reading the batch's columns or earlier ops' outputs (one-hot's included)."""
    numbers, texts = ["a", "b"], ["t"]
    ops: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(sorted(KINDS)))
        output = f"o{i}"
        source = st.sampled_from(numbers)
        if kind == "ratio":
            op = {"op": kind, "numerator": draw(source), "denominator": draw(source), "output": output}
            if draw(st.booleans()):
                op["default"] = draw(st.sampled_from([0, -1, 1.5]))
        elif kind == "one_hot":
            categories = draw(CATEGORIES)
            op = {"op": kind, "input": draw(st.sampled_from(numbers + texts)), "output": output}
            op["categories"] = categories
        else:
            op = {"op": kind, "input": draw(source), "output": output}
            if kind == "clip":
                low, high = sorted([draw(st.sampled_from([-1, 0, 1, 2.5])), draw(st.sampled_from([0, 1, 3]))])
                op |= draw(st.sampled_from([{"low": low}, {"high": high}, {"low": low, "high": high}]))
            elif kind == "bucketise":
                op["edges"] = sorted(set(draw(EDGES)))
        ops.append(op)
        numbers += [f"{output}={c}" for c in op["categories"]] if kind == "one_hot" else [output]
    return ops


NAIVE: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, float]]] = {
    "log": lambda op, row: {op["output"]: naive_log(row[op["input"]])},
    "log1p": lambda op, row: {op["output"]: naive_log1p(row[op["input"]])},
    "clip": lambda op, row: {op["output"]: naive_clip(row[op["input"]], op.get("low"), op.get("high"))},
    "ratio": lambda op, row: {
        op["output"]: naive_ratio(row[op["numerator"]], row[op["denominator"]], op.get("default"))
    },
    "bucketise": lambda op, row: {op["output"]: naive_bucket(row[op["input"]], op["edges"])},
    "one_hot": lambda op, row: dict(
        zip(
            [f"{op['output']}={c}" for c in op["categories"]],
            naive_one_hot(row[op["input"]], op["categories"]),
            strict=True,
        )
    ),
}


@given(chains(), st.integers(0, 25).flatmap(lambda n: st.tuples(*[st.tuples(NUMBERS, NUMBERS, TEXT_CELLS)] * n)))
def test_chains_equal_the_naive_row_by_row_evaluation(
    items: list[dict[str, Any]], rows: tuple[tuple[float, float, Any], ...]
) -> None:
    ops = parse_ops(items, WHERE)
    columns = {
        "a": np.array([r[0] for r in rows], dtype=np.float64),
        "b": np.array([r[1] for r in rows], dtype=np.float64),
        "t": np.array([r[2] for r in rows], dtype=object),
    }
    out = apply(ops, columns, len(rows))
    assert tuple(out) == outputs_of(ops)
    assert set(columns) == {"a", "b", "t"}  # apply adds nothing to its input
    expected: dict[str, list[float]] = {name: [] for name in out}
    for a, b, t in rows:
        row: dict[str, Any] = {"a": a, "b": b, "t": t}
        for op in items:
            row |= NAIVE[op["op"]](op, row)
        for name in expected:
            expected[name].append(row[name])
    for name, values in expected.items():
        close(out[name], values)
    read = {name for op in items for key in ("input", "numerator", "denominator") if (name := op.get(key))}
    assert inputs_of(ops) == read & {"a", "b", "t"}
    assert len(set(outputs_of(ops))) == len(outputs_of(ops))


def test_inputs_and_outputs_of_a_chain() -> None:
    ops = parse_ops(
        [
            {"op": "one_hot", "input": "country", "output": "country", "categories": ["fr", "de"]},
            {"op": "ratio", "numerator": "country=fr", "denominator": "n", "output": "fr_share"},
            {"op": "log1p", "input": "fr_share", "output": "log_share"},
        ],
        WHERE,
    )
    assert inputs_of(ops) == {"country", "n"}
    assert outputs_of(ops) == ("country=fr", "country=de", "fr_share", "log_share")
    assert ops[0] == Op("one_hot", ("country",), "country", {"categories": ("fr", "de")})


def test_running_on_a_bad_batch_fails_it() -> None:
    ops = parse_ops([{"op": "log", "input": "x", "output": "y"}], WHERE)
    with pytest.raises(ScoringError, match="no column 'x'"):
        apply(ops, {}, 1)
    with pytest.raises(ScoringError, match="shape"):
        apply(ops, {"x": np.zeros(2)}, 3)
    with pytest.raises(ScoringError, match="not numbers"):
        apply(ops, {"x": np.array(["1.5"], dtype=object)}, 1)
    assert apply(ops, {"x": np.array([1, 0], dtype=np.int64)}, 2)["y"].tolist()[0] == 0.0


# ---------------------------------------------------------------------------------------------- parse errors

BAD_OPS: list[tuple[Any, str]] = [
    ([], "ops must be a non-empty list"),
    ({"op": "log"}, "ops must be a non-empty list"),
    (["log"], "ops[0]: must be a table"),
    ([{"op": "sqrt", "input": "x", "output": "y"}], "ops[0] ('y'): op 'sqrt' is not one of"),
    ([{"input": "x", "output": "y"}], "ops[0] ('y'): op None"),
    ([{"op": "log", "input": "x"}], "ops[0]: output must be"),
    ([{"op": "log", "input": "x", "output": ""}], "ops[0]: output must be"),
    ([{"op": "log", "output": "y"}], "ops[0] ('y'): input must be"),
    ([{"op": "log", "input": 3, "output": "y"}], "input must be"),
    ([{"op": "log", "input": "x", "output": "y", "base": 10}], "ops[0] ('y'): unknown key(s) base for op 'log'"),
    ([{"op": "ratio", "numerator": "a", "output": "r"}], "ops[0] ('r'): denominator must be"),
    ([{"op": "ratio", "input": "a", "denominator": "b", "output": "r"}], "unknown key(s) input"),
    ([{"op": "ratio", "numerator": "a", "denominator": "b", "output": "r", "default": "0"}], "default must be"),
    ([{"op": "clip", "input": "x", "output": "y"}], "clip needs low, high or both"),
    ([{"op": "clip", "input": "x", "output": "y", "low": 2, "high": 1}], "low 2 is above high 1"),
    ([{"op": "clip", "input": "x", "output": "y", "low": True}], "low must be a number"),
    ([{"op": "clip", "input": "x", "output": "y", "high": NAN}], "high must be a number"),
    ([{"op": "bucketise", "input": "x", "output": "y"}], "edges must be a non-empty list"),
    ([{"op": "bucketise", "input": "x", "output": "y", "edges": []}], "edges must be a non-empty list"),
    ([{"op": "bucketise", "input": "x", "output": "y", "edges": [1, 1]}], "strictly increasing"),
    ([{"op": "bucketise", "input": "x", "output": "y", "edges": [2, 1]}], "strictly increasing"),
    ([{"op": "bucketise", "input": "x", "output": "y", "edges": [1, INF]}], "finite"),
    ([{"op": "bucketise", "input": "x", "output": "y", "edges": [1, "2"]}], "every edge must be a number"),
    ([{"op": "bucketize", "input": "x", "output": "y", "edges": [1]}], "op 'bucketize' is not one of"),
    ([{"op": "one_hot", "input": "x", "output": "y"}], "categories must be a non-empty list"),
    ([{"op": "one_hot", "input": "x", "output": "y", "categories": ["a", 1]}], "categories must be strings"),
    ([{"op": "one_hot", "input": "x", "output": "y", "categories": ["a", "a"]}], "categories has duplicates"),
    (
        [{"op": "log", "input": "x", "output": "y"}, {"op": "log1p", "input": "x", "output": "y"}],
        "ops[1] ('y'): column 'y' is already written by ops[0]",
    ),
    (
        [
            {"op": "one_hot", "input": "c", "output": "c", "categories": ["a"]},
            {"op": "log", "input": "x", "output": "c=a"},
        ],
        "ops[1] ('c=a'): column 'c=a' is already written by ops[0]",
    ),
    ([{"op": "clip", "input": "x", "output": "x", "low": 0}], "ops[0] ('x'): writes column 'x', which ops[0] reads"),
    (
        [{"op": "log", "input": "x", "output": "y"}, {"op": "log", "input": "z", "output": "x"}],
        "ops[1] ('x'): writes column 'x', which ops[0] reads",
    ),
]


@pytest.mark.parametrize(("items", "fragment"), BAD_OPS)
def test_parse_errors_are_one_line_naming_the_op(items: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_ops(items, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ") and "\n" not in message
    assert fragment in message


@given(chains(), st.data())
def test_a_broken_op_in_any_chain_is_named(items: list[dict[str, Any]], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(items) - 1))
    op = items[index]
    mutation = data.draw(st.sampled_from(["kind", "extra", "no-output-column", "duplicate"]))
    if mutation == "kind":
        op["op"] = "exp"
    elif mutation == "extra":
        op["scale"] = 2
    elif mutation == "no-output-column":
        op.pop("input", None) if "input" in op else op.pop("numerator")
    else:
        items.append(dict(op))
        index = len(items) - 1
    with pytest.raises(ConfigError) as caught:
        parse_ops(items, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ops[{index}] ('{op['output']}'): ") and "\n" not in message
