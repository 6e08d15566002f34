"""Logistic models as ONNX graphs, both ways: the weights of a shipped model in, the learnt weights out.

The accepted form (``read_logistic``; anything else is refused with a one-line ``ModelError``):

- the graph's nodes are one ``LinearClassifier`` (domain ``ai.onnx.ml``), optionally preceded by one ``Scaler``
  (``(x - offset) * scale``, per feature or one value for all, every scale finite and positive) that reads the
  graph's single input and feeds the classifier -- what skl2onnx writes for
  ``make_pipeline(StandardScaler(), LogisticRegression())`` without ZipMap;
- the classifier is binary logistic: ``post_transform = LOGISTIC``, ``classlabels_ints = [0, 1]``, and either
  two coefficient rows ``-w`` and ``w`` with intercepts ``-b`` and ``b`` (skl2onnx) or one row ``w`` with one
  intercept ``b`` (other exporters); ONNX Runtime computes the same ``label`` [batch] int64 and
  ``probabilities`` [batch, 2] = ``[1 - p, p]`` from both;
- the graph's outputs are the classifier's outputs (both or one, any names, any order); every number finite.

``build_logistic`` writes a graph of the same form from weights: the card's input name, the shipped graph's
output names in its order and its coefficient layout (``GraphForm``), so that the card's output references and
the scorer's output names read the rebuilt graph exactly as they read the shipped one -- the worker serves online
models through graphs built this way, and ``streamer models freeze`` writes one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from streamer.core.cards import ModelCard
from streamer.core.errors import ModelError

ML_DOMAIN = "ai.onnx.ml"


@dataclass(frozen=True, slots=True)
class GraphForm:
    """How a shipped logistic graph is laid out, beyond its weights: what a rebuilt graph must repeat.

    Invariant: ``outputs`` is non-empty and each of its items is ``label`` or ``score``; ``rows`` is 1 or 2.
    """

    label: str  # the LinearClassifier's first output (predicted class)
    score: str  # its second output (probabilities, [batch, 2])
    outputs: tuple[str, ...]  # the graph's outputs, in the graph's order
    rows: int  # coefficient rows: 2 (``-w``, ``w``: skl2onnx) or 1 (``w``)


@dataclass(frozen=True, slots=True)
class LogisticWeights:
    """``p = sigmoid(((x - mean) / scale) @ coef + bias)``; ``form`` None: the default layout of ``build_logistic``
    (outputs named by the card, label first, two coefficient rows)."""

    coef: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    form: GraphForm | None = None


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _per_feature(values: object, d: int, name: str, where: str) -> np.ndarray:
    """A Scaler attribute as ``d`` floats: ONNX allows one value per feature or a single one for all."""
    array = np.asarray(values if values is not None else [], dtype=np.float64)
    if array.shape == (1,):
        array = np.full(d, array[0])
    if array.shape != (d,):
        raise ModelError(where, f"the Scaler's {name} has {array.size} values for {d} features")
    return array


def read_logistic(model: onnx.ModelProto, where: str) -> LogisticWeights:
    """The weights and layout of a graph of the accepted form (module docstring), or ``ModelError(where, ...)``."""
    graph = model.graph
    kinds = [node.op_type for node in graph.node]
    if sorted(kinds) not in (["LinearClassifier"], ["LinearClassifier", "Scaler"]):
        found = ", ".join(kinds) or "no nodes"
        raise ModelError(where, f"an online model must be [Scaler +] LinearClassifier, found {found}")
    nodes = {node.op_type: node for node in graph.node}
    classifier = nodes["LinearClassifier"]
    if any(node.domain != ML_DOMAIN for node in graph.node):
        raise ModelError(where, f"the online model's nodes must be of domain {ML_DOMAIN}")
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise ModelError(where, f"an online model takes exactly one input, the graph has {len(inputs)}")
    scaler = nodes.get("Scaler")
    if scaler is not None and (list(scaler.input) != inputs or list(classifier.input) != list(scaler.output)):
        raise ModelError(where, "the Scaler must read the graph's input and feed the LinearClassifier")
    if scaler is None and list(classifier.input) != inputs:
        raise ModelError(where, "the LinearClassifier must read the graph's input")
    if len(classifier.output) != 2 or not all(classifier.output):
        raise ModelError(where, "the LinearClassifier must have its two outputs (label, probabilities)")
    label_name, score_name = classifier.output
    outputs = tuple(o.name for o in graph.output)
    if not outputs or not set(outputs) <= {label_name, score_name} or len(set(outputs)) != len(outputs):
        raise ModelError(where, "the graph's outputs must be the LinearClassifier's label and/or probabilities")

    attrs = _attributes(classifier)
    coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    intercepts = np.asarray(attrs.get("intercepts", []), dtype=np.float64)
    if attrs.get("post_transform") != b"LOGISTIC" or list(attrs.get("classlabels_ints", [])) != [0, 1]:
        raise ModelError(where, "the LinearClassifier is not a binary logistic model (LOGISTIC, classes [0, 1])")
    rows = len(intercepts)
    if rows not in (1, 2) or coefficients.size == 0 or coefficients.size % rows:
        raise ModelError(
            where, f"the LinearClassifier has {rows} intercepts and {coefficients.size} coefficients, not 1 or 2 rows"
        )
    if not (np.all(np.isfinite(coefficients)) and np.all(np.isfinite(intercepts))):
        raise ModelError(where, "the LinearClassifier's coefficients or intercepts are not finite")
    d = coefficients.size // rows
    coef, bias = coefficients[(rows - 1) * d :], float(intercepts[-1])
    if rows == 2 and not (np.allclose(coefficients[:d], -coef) and np.isclose(intercepts[0], -bias)):
        raise ModelError(where, "the LinearClassifier's class rows are not -w and w")
    mean, scale = np.zeros(d), np.ones(d)
    if scaler is not None:
        scaler_attrs = _attributes(scaler)
        mean = _per_feature(scaler_attrs.get("offset", [0.0]), d, "offset", where)
        multiplier = _per_feature(scaler_attrs.get("scale", [1.0]), d, "scale", where)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(multiplier)) and np.all(multiplier > 0)):
            raise ModelError(where, "the Scaler's offsets must be finite and its scales finite and positive")
        scale = 1.0 / multiplier
    return LogisticWeights(coef, bias, mean, scale, GraphForm(label_name, score_name, outputs, rows))


def read_logistic_file(path: str) -> LogisticWeights:
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and friends for a bad file
        raise ModelError(path, f"not a loadable ONNX model: {exc}") from None
    return read_logistic(model, path)


def build_logistic(card: ModelCard, weights: LogisticWeights) -> bytes:
    """ONNX bytes computing ``card``'s outputs from ``weights``: input named by the card; outputs, their order and
    the coefficient layout from ``weights.form`` (the shipped graph's), else named by the card (``label`` when it
    reads none), label first, two rows. ONNX Runtime serves the result like the shipped graph."""
    d = len(card.features)
    if weights.coef.shape != (d,):
        raise ValueError(f"{len(weights.coef)} weights for {d} features")
    form = weights.form
    if form is None:
        label_name = card.label.name if card.label is not None else "label"
        form = GraphForm(label_name, card.score.name, (label_name, card.score.name), 2)
    scaled = "standardised" if "standardised" not in (card.input, form.label, form.score) else f"{card.input}_std"
    scaler = helper.make_node(
        "Scaler",
        [card.input],
        [scaled],
        domain=ML_DOMAIN,
        offset=[float(v) for v in weights.mean],
        scale=[float(v) for v in 1.0 / weights.scale],
    )
    coef = [float(v) for v in weights.coef]
    two_rows = form.rows == 2
    classifier = helper.make_node(
        "LinearClassifier",
        [scaled],
        [form.label, form.score],
        domain=ML_DOMAIN,
        classlabels_ints=[0, 1],
        coefficients=[-c for c in coef] + coef if two_rows else coef,
        intercepts=[-weights.bias, weights.bias] if two_rows else [weights.bias],
        multi_class=0,
        post_transform="LOGISTIC",
    )
    declared = {
        form.label: helper.make_tensor_value_info(form.label, TensorProto.INT64, [None]),
        form.score: helper.make_tensor_value_info(form.score, TensorProto.FLOAT, [None, 2]),
    }
    graph = helper.make_graph(
        [scaler, classifier],
        f"{card.name}-logistic",
        [helper.make_tensor_value_info(card.input, TensorProto.FLOAT, [None, d])],
        [declared[name] for name in form.outputs],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML_DOMAIN, 3)], producer_name="streamer"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
