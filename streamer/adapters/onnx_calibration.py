"""A frozen binary classifier behind its calibration stage (``core.calibration``), as one ONNX graph.

The frozen graph is kept whole; its score output (the card's ``score``, a ``[batch, 2]`` probabilities tensor
read at column 1, or a ``[batch]`` tensor) and label output are renamed inside the graph, and new nodes compute,
under the original names and in the original order, the calibrated ``[1 - q, q]`` (or ``q``) and the label
``q > 0.5``, where ``q = sigmoid(W [logit(p), (x_chosen - mean) / scale] + b)`` in float32. Every other output
of the frozen graph is served unchanged. The card's ``[outputs]`` read the calibrated graph as they read the
frozen one, so a version's predictions change only by the stage's weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from streamer.adapters.onnx_models import LoadedModel, session_options
from streamer.core import calibration, learner
from streamer.core.calibration import CLIP, CalibrationSpec
from streamer.core.errors import ModelError
from streamer.core.state import OnlineWeights

log = logging.getLogger(__name__)

_PREFIX = "streamer_calibration_"


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]


def build_calibrated(frozen: onnx.ModelProto, model: LoadedModel, spec: CalibrationSpec, w: np.ndarray) -> bytes:
    """The frozen graph followed by the stage with weights ``w`` (on standardised inputs, bias last)."""
    card = model.card
    graph = onnx.ModelProto()
    graph.CopyFrom(frozen)
    g = graph.graph
    score_name, column = card.score.name, card.score.column
    label_name = card.label.name if card.label is not None else None
    raw_score = _PREFIX + "frozen_score"
    _rename(g, score_name, raw_score)
    if label_name is not None:
        _rename(g, label_name, _PREFIX + "frozen_label")
    k = len(spec.columns)
    consts = {
        "column": np.array([column if column is not None else 0], dtype=np.int64),
        "clip_low": np.array(CLIP, dtype=np.float32),
        "clip_high": np.array(1 - CLIP, dtype=np.float32),
        "one": np.array(1.0, dtype=np.float32),
        "half": np.array(0.5, dtype=np.float32),
        "chosen": np.array(spec.columns, dtype=np.int64),
        "mean": np.array(spec.mean, dtype=np.float32).reshape(1, k),
        "scale": np.array(spec.scale, dtype=np.float32).reshape(1, k),
        "weights": np.asarray(w[:-1], dtype=np.float32).reshape(k + 1, 1),
        "bias": np.asarray(w[-1:], dtype=np.float32),
        "axes": np.array([1], dtype=np.int64),
    }
    g.initializer.extend(numpy_helper.from_array(v, _PREFIX + n) for n, v in consts.items())

    def c(name: str) -> str:
        return _PREFIX + name

    nodes = []
    p = raw_score
    if column is not None:
        nodes.append(helper.make_node("Gather", [raw_score, c("column")], [c("p2")], axis=1))  # [batch, 1]
        p = c("p2")
    else:
        nodes.append(helper.make_node("Unsqueeze", [raw_score, c("axes")], [c("p2")]))
        p = c("p2")
    nodes += [
        helper.make_node("Clip", [p, c("clip_low"), c("clip_high")], [c("p")]),
        helper.make_node("Sub", [c("one"), c("p")], [c("not_p")]),
        helper.make_node("Log", [c("p")], [c("log_p")]),
        helper.make_node("Log", [c("not_p")], [c("log_not_p")]),
        helper.make_node("Sub", [c("log_p"), c("log_not_p")], [c("logit")]),
    ]
    inputs = c("logit")
    if k:
        nodes += [
            helper.make_node("Gather", [card.input, c("chosen")], [c("x")], axis=1),
            helper.make_node("Sub", [c("x"), c("mean")], [c("x_centred")]),
            helper.make_node("Div", [c("x_centred"), c("scale")], [c("x_std")]),
            helper.make_node("Concat", [c("logit"), c("x_std")], [c("inputs")], axis=1),
        ]
        inputs = c("inputs")
    nodes += [
        helper.make_node("MatMul", [inputs, c("weights")], [c("margin0")]),
        helper.make_node("Add", [c("margin0"), c("bias")], [c("margin")]),
        helper.make_node("Sigmoid", [c("margin")], [c("q")]),  # [batch, 1]
    ]
    if column is not None:
        nodes += [
            helper.make_node("Sub", [c("one"), c("q")], [c("not_q")]),
            helper.make_node("Concat", [c("not_q"), c("q")], [score_name], axis=1),
        ]
    else:
        nodes.append(helper.make_node("Squeeze", [c("q"), c("axes")], [score_name]))
    if label_name is not None:
        nodes += [
            helper.make_node("Greater", [c("q"), c("half")], [c("positive")]),
            helper.make_node("Squeeze", [c("positive"), c("axes")], [c("positive_1d")]),
            helper.make_node("Cast", [c("positive_1d")], [label_name], to=TensorProto.INT64),
        ]
    g.node.extend(nodes)
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


class Calibrated:
    """The frozen model of one calibrated version and its stage, serving the weights of a shared state."""

    def __init__(self, model: LoadedModel, threads: int = 1) -> None:
        spec = model.card.calibration
        if spec is None:
            raise ModelError(str(model.path), f"{model.card.ref} has no [calibration]")
        self.model, self.spec, self.threads = model, spec, threads
        self.frozen = onnx.load(str(model.path))
        self.generation: tuple[int, int] = (-1, -1)

    def frozen_scores(self, matrix: np.ndarray) -> np.ndarray:
        """The frozen model's score of rows ``matrix`` (what the stage learns from)."""
        outputs = dict(
            zip(
                self.model.output_names,
                self.model.session.run(None, {self.model.card.input: matrix.astype(np.float32)}),
                strict=True,
            )
        )
        score = np.asarray(outputs[self.model.card.score.name])
        column = self.model.card.score.column
        return (score[:, column] if column is not None else score).astype(np.float64)

    def serving(self, shared: OnlineWeights) -> LoadedModel:
        """The version serving the stage of ``shared`` (``ModelError`` naming the file if it cannot)."""
        w = learner.weights_from_zn(shared.z, shared.n, self.spec.params)
        try:
            data = build_calibrated(self.frozen, self.model, self.spec, w)
            options = session_options(self.threads)
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx.checker's and ONNX Runtime's own errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(str(self.model.path), f"cannot serve the calibration stage: {first}") from None
        return LoadedModel(self.model.card, Path(self.model.path), session, self.model.output_names)


def check_calibration(model: LoadedModel, rows: np.ndarray) -> None:
    """Refuse (``ModelError``) a ``[calibration]`` version whose graph cannot carry the stage: the composed graph
    at its starting state (the identity) must build, load and score ``rows`` like the frozen graph. No-op for a
    card without ``[calibration]``."""
    if model.card.calibration is None:
        return
    calibrated = Calibrated(model)
    start = calibration.initial(calibrated.spec)
    served = calibrated.serving(OnlineWeights(start.z, start.n, 0))
    expected = calibrated.frozen_scores(rows)
    try:
        outputs = dict(zip(served.output_names, served.session.run(None, {model.card.input: rows}), strict=True))
    except Exception as exc:  # ONNX Runtime's own error types
        raise ModelError(str(model.path), f"the calibration stage cannot score sample rows: {exc}") from None
    score = np.asarray(outputs[model.card.score.name])
    got = score[:, model.card.score.column] if model.card.score.column is not None else score
    clipped = np.clip(expected, CLIP, 1 - CLIP)
    if not np.allclose(got, clipped, atol=1e-5):
        raise ModelError(str(model.path), "the calibration stage at its start does not reproduce the frozen score")
