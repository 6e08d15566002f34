"""Logistic models as ONNX graphs, both ways: the weights of a shipped model in, the learnt weights out.

The form is the one skl2onnx writes for ``make_pipeline(StandardScaler(), LogisticRegression())`` without
ZipMap: an optional ``Scaler`` (``(x - offset) * scale``) then a binary ``LinearClassifier`` with
``post_transform = LOGISTIC`` whose two coefficient rows are ``-w`` and ``w`` (class 0, class 1) and intercepts
``-b`` and ``b``; outputs ``label`` [batch] int64 and ``probabilities`` [batch, 2]. ``read_logistic`` takes
such a file apart (anything else is refused with a ``ModelError``); ``build_logistic`` writes one from weights,
with the input and output names of the card, so an online model's current weights become a model version that
ONNX Runtime serves like any other -- the worker itself serves online models through graphs built this way.
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
class LogisticWeights:
    """``p = sigmoid(((x - mean) / scale) @ coef + bias)``."""

    coef: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray


def read_logistic(model: onnx.ModelProto, where: str) -> LogisticWeights:
    nodes = {node.op_type: node for node in model.graph.node}
    if set(nodes) - {"Scaler", "LinearClassifier"} or "LinearClassifier" not in nodes:
        raise ModelError(where, f"an online model must be Scaler + LinearClassifier, found {', '.join(nodes)}")
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes["LinearClassifier"].attribute}
    coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    intercepts = np.asarray(attrs.get("intercepts", []), dtype=np.float64)
    if attrs.get("post_transform") != b"LOGISTIC" or len(intercepts) != 2 or len(coefficients) % 2:
        raise ModelError(where, "the LinearClassifier is not a binary logistic model (LOGISTIC, two classes)")
    d = len(coefficients) // 2
    coef, bias = coefficients[d:], float(intercepts[1])
    if not (np.allclose(coefficients[:d], -coef) and np.isclose(intercepts[0], -bias)):
        raise ModelError(where, "the LinearClassifier's class rows are not -w and w")
    mean, scale = np.zeros(d), np.ones(d)
    if "Scaler" in nodes:
        scaler = {a.name: helper.get_attribute_value(a) for a in nodes["Scaler"].attribute}
        mean = np.asarray(scaler["offset"], dtype=np.float64)
        scale = 1.0 / np.asarray(scaler["scale"], dtype=np.float64)
        if mean.shape != (d,) or scale.shape != (d,):
            raise ModelError(where, "the Scaler's width differs from the LinearClassifier's")
    return LogisticWeights(coef, bias, mean, scale)


def read_logistic_file(path: str) -> LogisticWeights:
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and friends for a bad file
        raise ModelError(path, f"not a loadable ONNX model: {exc}") from None
    return read_logistic(model, path)


def build_logistic(card: ModelCard, weights: LogisticWeights) -> bytes:
    """ONNX bytes computing ``card``'s outputs from ``weights`` (input and output names from the card)."""
    d = len(card.features)
    if weights.coef.shape != (d,):
        raise ValueError(f"{len(weights.coef)} weights for {d} features")
    label_name = card.label.name if card.label is not None else "label"
    scaled = "standardised"
    scaler = helper.make_node(
        "Scaler",
        [card.input],
        [scaled],
        domain=ML_DOMAIN,
        offset=[float(v) for v in weights.mean],
        scale=[float(v) for v in 1.0 / weights.scale],
    )
    coef = [float(v) for v in weights.coef]
    classifier = helper.make_node(
        "LinearClassifier",
        [scaled],
        [label_name, card.score.name],
        domain=ML_DOMAIN,
        classlabels_ints=[0, 1],
        coefficients=[-c for c in coef] + coef,
        intercepts=[-weights.bias, weights.bias],
        multi_class=0,
        post_transform="LOGISTIC",
    )
    graph = helper.make_graph(
        [scaler, classifier],
        f"{card.name}-logistic",
        [helper.make_tensor_value_info(card.input, TensorProto.FLOAT, [None, d])],
        [
            helper.make_tensor_value_info(label_name, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(card.score.name, TensorProto.FLOAT, [None, 2]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML_DOMAIN, 3)], producer_name="streamer"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
