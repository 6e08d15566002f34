"""Open Inference Protocol v2 answers: an inference response made of a prediction, and model and server
metadata. Pure: values in, the protocol's JSON out.

An inference response is derived from the prediction envelope's declaration (``core.outputs``): every per-row
field that has an OIP datatype there is a tensor named like the field (``score`` FP64, ``label`` INT64 for a
classifier, ``decision`` and ``reasons`` BYTES where a graph's rules decided: each row's reasons as JSON text),
after one tensor per model output under the output's own name (``outputs.<name>`` when it is one of those
field names). ``parameters`` carries the prediction's ``id``, ``model`` and the ``version`` that served the
request. A field added to the declaration with an OIP datatype is answered with no change here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core import outputs
from streamer.core.cards import ModelCard
from streamer.core.errors import SCHEMA, DecodeError
from streamer.oip.codec import OipError

# The prediction fields answered as tensors of their own; a model output named like one is renamed.
STREAMER_OUTPUTS = tuple(f.name for f in outputs.FIELDS if f.rows and f.oip is not None)
PLATFORM = "onnxruntime_onnx"

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]  # flat, row-major


@dataclass(frozen=True, slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: tuple[OutputTensor, ...]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def output(self, name: str) -> OutputTensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


def encode_infer_response(response: InferResponse) -> bytes:
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": t.data} for t in response.outputs
    ]
    return _encoder.encode(body)


def _tensor_of(name: str, rows: list[Any], datatype: str | None) -> OutputTensor:
    """One response tensor from a field's per-row values (BYTES: a string as is, anything else as JSON text)."""
    if datatype == "BYTES" or (datatype is None and rows and isinstance(_first(rows), str | dict | list)):
        flat = [v if isinstance(v, str) else _encoder.encode(v).decode() for v in rows]
        return OutputTensor(name, "BYTES", (len(flat),), flat)
    array = np.asarray(rows)
    if datatype is None:
        datatype = "BOOL" if array.dtype == np.bool_ else "INT64" if array.dtype.kind in "iu" else "FP64"
    return OutputTensor(name, datatype, array.shape, array.reshape(-1).tolist())


def _first(values: list[Any]) -> Any:
    value: Any = values
    while isinstance(value, list) and value:
        value = value[0]
    return value


def output_name(name: str) -> str:
    """A model output's name in a response: its own, unless it is one of the streamer's fields."""
    return f"outputs.{name}" if name in STREAMER_OUTPUTS else name


# The model's outputs first, then the streamer's fields in declaration order.
_ANSWERED = sorted((f for f in outputs.FIELDS if f.rows), key=lambda f: f.oip is not None)


def response_of(
    prediction: outputs.Prediction,
    request_id: str | None,
    requested: Sequence[str] | None = None,
    datatypes: Mapping[str, str] | None = None,
) -> InferResponse:
    """The protocol's response for one prediction of the stream's scoring path (decoded by the declaration).

    ``datatypes``: the model's output datatypes by output name (ONNX Runtime's, through ``ONNX_DATATYPES``),
    so that an FP32 output is answered as FP32; an output not listed gets its datatype from its values.
    ``requested``: the output names the request asked for (None: all); an unknown one is a ``schema`` error."""
    datatypes = datatypes or {}
    arrays = isinstance(prediction.score, list)  # an OIP request's prediction: one item per row in every field
    tensors: list[OutputTensor] = []
    for spec in _ANSWERED:
        value = getattr(prediction, spec.name)
        if value is None or value is msgspec.UNSET:
            continue
        if spec.oip is None:  # the model's outputs, each a tensor of its own
            for name, values in value.items():
                tensors.append(_tensor_of(output_name(name), values if arrays else [values], datatypes.get(name)))
        else:
            tensors.append(_tensor_of(spec.name, value if arrays else [value], spec.oip))
    if requested is not None:
        by_name = {t.name: t for t in tensors}
        unknown = [name for name in requested if name not in by_name]
        if unknown:
            asked, known = ", ".join(map(repr, unknown)), ", ".join(by_name)
            raise OipError.of(DecodeError(SCHEMA, f"no output named {asked} (outputs: {known})"))
        tensors = [by_name[name] for name in requested]
    parameters = {"id": prediction.id, "model": prediction.model, "version": prediction.version}
    return InferResponse(prediction.model, prediction.version, tuple(tensors), request_id, parameters)


# ------------------------------------------------------------------------------------------------ metadata


@dataclass(frozen=True, slots=True)
class OutputInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]


def _answered_fields(card: ModelCard, optional: frozenset[str]) -> list[dict[str, Any]]:
    """The streamer's fields a model's response carries: the required ones (``label`` when the card names one)
    and the optional ones its answers fill (a graph's ``decision`` and ``reasons``, ``enrichment``)."""
    listed = []
    for spec in outputs.FIELDS:
        if not spec.rows or spec.oip is None:
            continue
        present = spec.name in optional if not spec.required else spec.name != "label" or card.label is not None
        if present:
            listed.append({"name": spec.name, "datatype": spec.oip, "shape": [-1]})
    return listed


def model_metadata(
    name: str,
    cards: Mapping[int, ModelCard],
    serving: int | None,
    version: int | None = None,
    model_outputs: Iterable[OutputInfo] = (),
    optional_fields: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: inputs, outputs, datatypes and shapes from the card.

    The input is the card's ``[rows, n_features]`` FP32 tensor (-1: any number of rows); one ``[rows]`` tensor
    per feature (``parameters.features``, in column order) is the other accepted form, and a declared graph's
    only one (it has no matrix input)."""
    card = cards[version if version is not None else serving]  # type: ignore[index]
    listed = [
        {"name": output_name(o.name), "datatype": o.datatype, "shape": [-1 if d < 0 else d for d in o.shape]}
        for o in model_outputs
    ]
    listed += _answered_fields(card, optional_fields)
    return {
        "name": name,
        "versions": [str(version)] if version is not None else [str(v) for v in sorted(cards)],
        "platform": PLATFORM,
        "inputs": (
            [{"name": card.input, "datatype": "FP32", "shape": [-1, len(card.features)]}]
            if card.input  # a declared graph has no matrix input of its own: one tensor per feature
            else [{"name": feature, "datatype": "FP32", "shape": [-1]} for feature in card.features]
        ),
        "outputs": listed,
        "parameters": {
            "features": ",".join(card.features),
            "serving_version": str(card.version),
            "task": card.task,
        },
    }


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "streamer", "version": version, "extensions": []}
