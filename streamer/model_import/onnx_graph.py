"""ONNX graphs as streamer serves them: one float32 input, plain tensor outputs, ``score`` and ``label`` found.

``serving_form`` brings a converted (or given) graph to the form the card can describe:

- a ``ZipMap`` output (a sequence of maps, one per row: what skl2onnx and onnxmltools give by default, and what
  no card can read) is replaced by the probability tensor it was made from;
- every output's first axis is the batch (LightGBM's converter declares its label ``[1]``);
- a multiclass classifier gains ``predicted_probability`` (the highest class probability of each row), the
  contract's ``score`` for a multiclass model;
- the opset imports are sorted, so that the same model gives the same bytes (and ``sha256``) on every run.

``outputs_of`` then reads which output is the label, the probabilities or a regressor's value, by running the
graph on two rows of zeros (declared shapes are often symbolic or absent). ``OnnxSource`` is an ONNX file given
as the source: converted by nothing, it is compared with its serving form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from streamer.adapters.onnx_models import session_options
from streamer.core.errors import ImportRefused
from streamer.model_import.source_model import Prediction

PREDICTED_PROBABILITY = "predicted_probability"
_FLOAT = TensorProto.FLOAT


@dataclass(frozen=True, slots=True)
class Outputs:
    """Which outputs of a graph serving reads: ``task``, ``score`` and ``label`` as card output references."""

    task: str
    input: str
    n_features: int | None
    score: str
    label: str | None
    probabilities: str | None  # the [rows, classes] tensor of a classifier
    classes: int  # probability columns; 0 for a regressor


def session(data: bytes) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, sess_options=session_options(1), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportRefused(f"ONNX Runtime cannot load the model: {first}") from None


def _input_of(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initialised = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialised]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ImportRefused(
            f"the ONNX graph has {len(inputs)} inputs ({names}); streamer feeds one float32 tensor "
            "[rows, features]: export the model with a single input"
        )
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != _FLOAT:
        kind = TensorProto.DataType.Name(tensor.elem_type).lower()
        raise ImportRefused(f"the ONNX input {inputs[0].name!r} is {kind}; streamer feeds float32: export it as float")
    if len(tensor.shape.dim) != 2:
        raise ImportRefused(f"the ONNX input {inputs[0].name!r} has rank {len(tensor.shape.dim)}, not [rows, features]")
    return inputs[0]


def _strip_zipmap(model: onnx.ModelProto) -> bool:
    graph = model.graph
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap"]
    for node in zipmaps:
        probabilities, mapped = node.input[0], node.output[0]
        classes = next((len(a.ints) or len(a.strings) for a in node.attribute if a.name.startswith("classlabels")), 0)
        graph.node.remove(node)
        for index, output in enumerate(graph.output):
            if output.name == mapped:
                graph.output.remove(output)
                graph.output.insert(
                    index, helper.make_tensor_value_info(probabilities, _FLOAT, [None, classes or None])
                )
    return bool(zipmaps)


def _dynamic_batch(model: onnx.ModelProto) -> bool:
    """Make every output's first axis symbolic; whether any was not."""
    changed = False
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) and not dims[0].dim_param:
            dims[0].Clear()
            dims[0].dim_param = "N"
            changed = True
    return changed


def _add_predicted_probability(model: onnx.ModelProto, probabilities: str) -> None:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:  # a graph of ai.onnx.ml operators only (onnxmltools' trees): import the default domain
        opset = 13
        model.opset_import.add(domain="", version=opset)
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on
        axes = helper.make_tensor(f"{PREDICTED_PROBABILITY}_axes", TensorProto.INT64, [1], [1])
        model.graph.initializer.append(axes)
        node = helper.make_node("ReduceMax", [probabilities, axes.name], [PREDICTED_PROBABILITY], keepdims=0)
    else:
        node = helper.make_node("ReduceMax", [probabilities], [PREDICTED_PROBABILITY], axes=[1], keepdims=0)
    model.graph.node.append(node)
    model.graph.output.append(helper.make_tensor_value_info(PREDICTED_PROBABILITY, _FLOAT, [None]))


def _sorted_opsets(model: onnx.ModelProto) -> None:
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.add(domain=domain, version=version)


def _load(data: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ImportRefused(f"not an ONNX model: {str(exc).strip() or type(exc).__name__}") from None


def serving_form(data: bytes, n_features: int | None = None) -> bytes:
    """The graph in the form a card describes (see the module docstring). Unchanged bytes when nothing needed a
    change; ImportRefused when the input is not one float32 [rows, features] tensor."""
    model = _load(data)
    _input_of(model)
    changed = _strip_zipmap(model)
    changed = _dynamic_batch(model) or changed
    found = outputs_of(model.SerializeToString(), n_features)
    if found.task == "multiclass-classification" and found.probabilities is not None:
        _add_predicted_probability(model, found.probabilities)
        changed = True
    if not changed:
        return data
    _sorted_opsets(model)
    return model.SerializeToString()


def outputs_of(data: bytes, n_features: int | None = None) -> Outputs:
    """Which outputs are the label, the probabilities or the value: by element type and by shape on a probe."""
    model = _load(data)
    tensor = _input_of(model)
    declared = tensor.type.tensor_type.shape.dim[1]
    width = declared.dim_value if declared.HasField("dim_value") else None
    if width is not None and n_features is not None and width != n_features:
        raise ImportRefused(f"the ONNX input takes {width} features, but {n_features} feature names were given")
    columns = width or n_features
    if columns is None:
        raise ImportRefused("the ONNX input does not say how many features it takes: give --features a,b,c")
    probe = session(data)
    names = [o.name for o in probe.get_outputs()]
    try:
        values = probe.run(None, {tensor.name: np.zeros((2, columns), dtype=np.float32)})
    except Exception as exc:  # ONNX Runtime's own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportRefused(f"the ONNX model cannot score two rows of {columns} features: {first}") from None
    labels, probabilities, scalars = [], [], []
    for name, value in zip(names, values, strict=True):
        array = np.asarray(value) if isinstance(value, np.ndarray) else None
        if array is None or array.shape[:1] != (2,):
            continue  # a sequence of maps, or not one answer per row: not readable by a card
        if array.dtype.kind in "iu" and (array.ndim == 1 or array.shape[1:] == (1,)):
            labels.append(name)
        elif array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] >= 2:
            probabilities.append((name, array.shape[1]))
        elif array.dtype.kind == "f" and (array.ndim == 1 or array.shape[1:] == (1,)):
            scalars.append(name)
    if labels and probabilities:
        name, classes = sorted(probabilities, key=lambda p: "prob" not in p[0])[0]
        if classes == 2:
            return Outputs("binary-classification", tensor.name, columns, f"{name}[:,1]", labels[0], name, 2)
        score = PREDICTED_PROBABILITY if PREDICTED_PROBABILITY in names else name
        return Outputs("multiclass-classification", tensor.name, columns, score, labels[0], name, classes)
    if scalars and not labels:
        return Outputs("regression", tensor.name, columns, scalars[0], None, None, 0)
    raise ImportRefused(
        f"cannot tell the score and label among the ONNX outputs {names}: a classifier needs an integer label "
        "tensor and a [rows, classes] float probability tensor (no ZipMap), a regressor one float value per row"
    )


class OnnxSource:
    """An ONNX file given as the source. Its serving form is proved equal to the file itself: the only change
    the import may make is to the outputs' form (ZipMap, batch axis, the multiclass score)."""

    converter = "none (an ONNX file)"

    def __init__(self, data: bytes, origin: str) -> None:
        self._data = data
        model = _load(data)
        _input_of(model)
        self.description = f"ONNX model {origin} (producer {model.producer_name or 'unknown'})"
        self.library = f"onnx {onnx.__version__}"
        self.feature_names: tuple[str, ...] | None = None
        width = model.graph.input[0].type.tensor_type.shape.dim[1]
        self.n_features: int | None = width.dim_value if width.HasField("dim_value") else None
        self.task = ""
        self.classes: tuple[int, ...] = ()
        self._session: ort.InferenceSession | None = None

    def describe_outputs(self, n_features: int) -> Outputs:
        found = outputs_of(serving_form(self._data, n_features), n_features)
        self.task = found.task
        self.classes = tuple(range(found.classes))
        return found

    def to_onnx(self, n_features: int) -> bytes:
        return self._data

    def predict(self, matrix: np.ndarray) -> Prediction:
        model = _load(self._data)
        _strip_zipmap(model)  # the file's own numbers, read as tensors
        found = outputs_of(model.SerializeToString(), matrix.shape[1])
        run = session(model.SerializeToString())
        names = [o.name for o in run.get_outputs()]
        values = dict(zip(names, run.run(None, {found.input: matrix.astype(np.float32)}), strict=True))
        if found.probabilities is not None:
            labels = np.asarray(values[found.label]).reshape(-1) if found.label else None
            return Prediction(probabilities=np.asarray(values[found.probabilities]), labels=labels)
        return Prediction(values=np.asarray(values[found.score]).reshape(-1))

    def split_thresholds(self) -> dict[int, np.ndarray]:
        return {}
