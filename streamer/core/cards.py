"""Model cards: the serving contract of one model version (contract section 6), parsed and checked purely.

A card says which ONNX input to feed, in which column order the features go, how ``score`` and ``label`` are
read from the ONNX outputs, and the checksum of ``model.onnx``. ``parse_card`` turns the TOML table into a
``ModelCard`` or raises ``ModelError`` naming the field; ``check_signature`` compares the card with what the
ONNX graph declares, so that a card that lies about its model is refused at load instead of scoring garbage.
The file reading, hashing and ONNX inspection live in ``adapters/model_repository.py``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from streamer.core.calibration import CalibrationSpec
from streamer.core.concept_drift import DETECTORS, AdwinParams, DetectorSpec, PageHinkleyParams
from streamer.core.drift import FeatureReference
from streamer.core.errors import ModelError
from streamer.core.learner import ON_DRIFT, FtrlParams

TASKS = ("binary-classification", "multiclass-classification", "regression")
_OUTPUT_REF = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*(?:\[\s*:\s*,\s*(\d+)\s*\])?\s*$")
_KNOWN_KEYS = {
    "name",
    "version",
    "task",
    "features",
    "input",
    "sha256",
    "outputs",
    "card",
    "categorical",
    "allow_missing",
    "threshold",
    "online",
    "reference",
    "concept_drift",
    "calibration",
}
LEARNERS = ("ftrl",)


@dataclass(frozen=True, slots=True)
class OutputRef:
    """``name`` or ``name[:,column]``: one ONNX output, optionally one column of a [batch, k] tensor."""

    name: str
    column: int | None = None

    @classmethod
    def parse(cls, text: str, where: str) -> OutputRef:
        match = _OUTPUT_REF.match(text) if isinstance(text, str) else None
        if match is None:
            raise ModelError(where, f"output reference {text!r} is not 'name' or 'name[:,k]'")
        column = match.group(2)
        return cls(match.group(1), int(column) if column is not None else None)

    def __str__(self) -> str:
        return self.name if self.column is None else f"{self.name}[:,{self.column}]"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What the ONNX graph declares of one tensor; ``shape`` items are ints or None for dynamic axes."""

    name: str
    shape: tuple[int | None, ...]
    element_type: str


@dataclass(frozen=True, slots=True)
class GraphSignature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    version: int
    task: str
    features: tuple[str, ...]
    input: str
    sha256: str
    score: OutputRef
    label: OutputRef | None
    # Feature name -> its categories; a string value is coded as its index in this list.
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Whether null (missing) feature values may reach the model as NaN (trees handle it; linear models don't).
    allow_missing: bool = False
    # Decision threshold on ``score`` for binary classifiers (used by evaluation and rules).
    threshold: float = 0.5
    card: dict[str, Any] = field(default_factory=dict)
    # ``[online]``: the model learns from labels (FTRL-Proximal on a logistic model; see ``core.learner``).
    online: FtrlParams | None = None
    # ``[reference]``: training distribution per feature, for drift (``core.drift``).
    reference: dict[str, FeatureReference] = field(default_factory=dict)
    # ``[online] on_drift``: what the learner does when a concept drift is detected (``learner.adapted``).
    on_drift: str = "restart"
    # ``[concept_drift]``: the detector on the version's 0/1 error stream (``core.concept_drift``).
    concept_drift: DetectorSpec = field(default_factory=DetectorSpec)
    # ``[calibration]``: a logistic stage over a frozen model's logit, learnt online (``core.calibration``).
    calibration: CalibrationSpec | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def _require(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ModelError(where, f"missing required field '{key}'")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelError(where, f"field '{key}' has the wrong type ({type(value).__name__})")
    return value


def parse_card(table: dict[str, Any], where: str) -> ModelCard:
    """Validate a card's TOML table; ``where`` (the card's path) prefixes every error."""
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ModelError(where, f"unknown field(s) {', '.join(unknown)}")
    name = _require(table, "name", str, where)
    version = _require(table, "version", int, where)
    if version < 1:
        raise ModelError(where, f"version must be a positive integer, got {version}")
    task = _require(table, "task", str, where)
    if task not in TASKS:
        raise ModelError(where, f"task {task!r} is not one of {', '.join(TASKS)}")
    features = _require(table, "features", list, where)
    if not features or not all(isinstance(f, str) and f for f in features):
        raise ModelError(where, "features must be a non-empty list of names")
    if len(set(features)) != len(features):
        raise ModelError(where, "features has duplicate names")
    input_name = _require(table, "input", str, where)
    sha256 = _require(table, "sha256", str, where).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ModelError(where, "sha256 must be 64 hex digits")
    outputs = _require(table, "outputs", dict, where)
    if "score" not in outputs:
        raise ModelError(where, "outputs.score is required")
    score = OutputRef.parse(outputs["score"], where)
    label = OutputRef.parse(outputs["label"], where) if "label" in outputs else None
    categorical_raw = table.get("categorical", {})
    if not isinstance(categorical_raw, dict):
        raise ModelError(where, "categorical must be a table of feature = [categories]")
    categorical: dict[str, tuple[str, ...]] = {}
    for feature, categories in categorical_raw.items():
        if feature not in features:
            raise ModelError(where, f"categorical feature {feature!r} is not in features")
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ModelError(where, f"categories of {feature!r} must be a list of strings")
        categorical[feature] = tuple(categories)
    allow_missing = table.get("allow_missing", False)
    if not isinstance(allow_missing, bool):
        raise ModelError(where, "allow_missing must be true or false")
    threshold = table.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise ModelError(where, "threshold must be a number in [0, 1]")
    model_card = table.get("card", {})
    if not isinstance(model_card, dict):
        raise ModelError(where, "[card] must be a table")
    online = _parse_online(table.get("online"), task, where)
    on_drift = _parse_on_drift(table.get("online"), where)
    concept_drift = _parse_concept_drift(table.get("concept_drift", {}), where)
    reference = _parse_reference(table.get("reference", {}), features, where)
    calibration = _parse_calibration(table.get("calibration"), task, features, reference, online, where)
    return ModelCard(
        name=name,
        version=version,
        task=task,
        features=tuple(features),
        input=input_name,
        sha256=sha256,
        score=score,
        label=label,
        categorical=categorical,
        allow_missing=allow_missing,
        threshold=float(threshold),
        card=model_card,
        online=online,
        reference=reference,
        on_drift=on_drift,
        concept_drift=concept_drift,
        calibration=calibration,
    )


def _number(table: dict[str, Any], key: str, default: float, where: str, section: str = "online") -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ModelError(where, f"{section}.{key} must be a non-negative number")
    return float(value)


def _parse_online(table: Any, task: str, where: str) -> FtrlParams | None:
    """``[online] learner = "ftrl"`` with optional ``alpha``, ``beta``, ``l1``, ``l2``, ``rate_floor`` (defaults:
    ``FtrlParams``; ``rate_floor`` at most ``alpha / beta``, 0 = none).

    Any ``l1 >= 0`` is accepted: the shipped weights become the starting state for every ``l1``
    (``learner.from_weights``). Whether the graph is a logistic model the learner can take over is checked
    against the ONNX file, not here (``adapters.online.check_online``)."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ModelError(where, "[online] must be a table")
    unknown = sorted(set(table) - {"learner", "alpha", "beta", "l1", "l2", "rate_floor", "on_drift"})
    if unknown:
        raise ModelError(where, f"unknown field(s) online.{', online.'.join(unknown)}")
    if table.get("learner") not in LEARNERS:
        raise ModelError(where, f"online.learner must be one of {', '.join(LEARNERS)}")
    if task != "binary-classification":
        raise ModelError(where, "online learning needs task = 'binary-classification' (a logistic model)")
    defaults = FtrlParams()
    params = FtrlParams(
        alpha=_number(table, "alpha", defaults.alpha, where),
        beta=_number(table, "beta", defaults.beta, where),
        l1=_number(table, "l1", defaults.l1, where),
        l2=_number(table, "l2", defaults.l2, where),
        rate_floor=_number(table, "rate_floor", defaults.rate_floor, where),
    )
    problem = params.problem()  # alpha > 0, finite, beta + l2 > 0, rate_floor <= alpha / beta: the invariant
    if problem is not None:
        raise ModelError(where, problem)
    return params


def _parse_on_drift(table: Any, where: str, section: str = "online") -> str:
    """``[online] on_drift`` (default ``"restart"``, chosen by ``bench/drift.py``; docs/learning.md)."""
    value = table.get("on_drift", "restart") if isinstance(table, dict) else "restart"
    if value not in ON_DRIFT:
        raise ModelError(where, f"{section}.on_drift must be one of {', '.join(ON_DRIFT)}, got {value!r}")
    return value


_DETECTOR_FIELDS = {
    "adwin": {f: type(getattr(AdwinParams(), f)) for f in AdwinParams.__dataclass_fields__},
    "page-hinkley": {f: type(getattr(PageHinkleyParams(), f)) for f in PageHinkleyParams.__dataclass_fields__},
}


def _parse_concept_drift(table: Any, where: str) -> DetectorSpec:
    """``[concept_drift] detector = "adwin" | "page-hinkley" | "none"`` and that detector's parameters (River's
    names and defaults: ADWIN ``delta``, ``clock``, ``max_buckets``, ``min_window_length``, ``grace_period``;
    Page-Hinkley ``min_instances``, ``delta``, ``threshold``, ``alpha``, ``mode``)."""
    if not isinstance(table, dict):
        raise ModelError(where, "[concept_drift] must be a table")
    kind = table.get("detector", "adwin")
    if kind not in DETECTORS:
        raise ModelError(where, f"concept_drift.detector must be one of {', '.join(DETECTORS)}, got {kind!r}")
    fields = _DETECTOR_FIELDS.get(kind, {})
    unknown = sorted(set(table) - {"detector", *fields})
    if unknown:
        raise ModelError(where, f"unknown field(s) concept_drift.{', concept_drift.'.join(unknown)} for {kind}")
    values: dict[str, Any] = {}
    for key, kind_of in fields.items():
        if key not in table:
            continue
        value = table[key]
        ok = (
            isinstance(value, str) if kind_of is str else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok or (kind_of is int and value != int(value)):
            raise ModelError(where, f"concept_drift.{key} has the wrong type ({type(value).__name__})")
        values[key] = kind_of(value)
    spec = DetectorSpec(kind)
    if kind == "adwin":
        spec = DetectorSpec(kind, adwin=AdwinParams(**values))
    elif kind == "page-hinkley":
        spec = DetectorSpec(kind, page_hinkley=PageHinkleyParams(**values))
    problem = spec.problem()
    if problem is not None:
        raise ModelError(where, f"concept_drift: {problem}")
    return spec


def _parse_calibration(
    table: Any,
    task: str,
    features: list[str],
    reference: dict[str, FeatureReference],
    online: FtrlParams | None,
    where: str,
) -> CalibrationSpec | None:
    """``[calibration] features = [...]`` (optional, default none: the logit alone) with optional ``alpha``,
    ``beta``, ``l1``, ``l2``, ``rate_floor`` (the ``[online]`` defaults), ``on_drift``, and ``mean``/``scale``
    per chosen feature (default: from the feature's ``[reference]`` bins, else 0 and 1)."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ModelError(where, "[calibration] must be a table")
    known = {"features", "alpha", "beta", "l1", "l2", "rate_floor", "on_drift", "mean", "scale"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ModelError(where, f"unknown field(s) calibration.{', calibration.'.join(unknown)}")
    if task != "binary-classification" or online is not None:
        raise ModelError(
            where, "[calibration] needs a binary classifier without [online] (an online one learns itself)"
        )
    chosen = table.get("features", [])
    if not isinstance(chosen, list) or not all(isinstance(f, str) and f in features for f in chosen):
        raise ModelError(where, "calibration.features must be a list of the card's features")
    if len(set(chosen)) != len(chosen):
        raise ModelError(where, "calibration.features has duplicate names")
    moments = [_moments(reference.get(f)) for f in chosen]
    mean = table.get("mean", [m for m, _ in moments])
    scale = table.get("scale", [s for _, s in moments])
    for key, values in (("mean", mean), ("scale", scale)):
        numbers = isinstance(values, list) and all(isinstance(v, int | float) for v in values)
        if not numbers or len(values) != len(chosen):
            raise ModelError(where, f"calibration.{key} must be one number per calibration feature")
    if not all(v > 0 for v in scale):
        raise ModelError(where, "calibration.scale must be positive")
    defaults = FtrlParams()
    params = FtrlParams(
        *(
            _number(table, k, getattr(defaults, k), where, "calibration")
            for k in ("alpha", "beta", "l1", "l2", "rate_floor")
        )
    )
    problem = params.problem()
    if problem is not None:
        raise ModelError(where, problem.replace("online.", "calibration."))
    on_drift = _parse_on_drift(table, where, "calibration")
    columns = tuple(features.index(f) for f in chosen)
    return CalibrationSpec(columns, tuple(map(float, mean)), tuple(map(float, scale)), params, on_drift)


def _moments(ref: FeatureReference | None) -> tuple[float, float]:
    """Mean and standard deviation of a feature's training distribution, estimated from its ``[reference]``
    bins (each bin at its middle; the open outer bins one neighbouring width beyond the edge); 0 and 1 without."""
    if ref is None or not ref.edges:
        return 0.0, 1.0
    edges = list(ref.edges)
    width = (edges[-1] - edges[0]) / max(len(edges) - 1, 1) or 1.0
    points = [
        edges[0] - width / 2,
        *((a + b) / 2 for a, b in itertools.pairwise(edges)),
        edges[-1] + width / 2,
    ]
    mean = sum(f * x for f, x in zip(ref.fractions, points, strict=True))
    variance = sum(f * (x - mean) ** 2 for f, x in zip(ref.fractions, points, strict=True))
    return float(mean), float(variance**0.5) if variance > 0 else 1.0


def _parse_reference(table: Any, features: list[str], where: str) -> dict[str, FeatureReference]:
    """``[reference] feature = { edges = [...], fractions = [...] }`` for any of the card's features."""
    if not isinstance(table, dict):
        raise ModelError(where, "[reference] must be a table of feature = { edges, fractions }")
    reference: dict[str, FeatureReference] = {}
    for feature, entry in table.items():
        if feature not in features:
            raise ModelError(where, f"reference feature {feature!r} is not in features")
        if not isinstance(entry, dict) or set(entry) != {"edges", "fractions"}:
            raise ModelError(where, f"reference.{feature} must have exactly edges and fractions")
        values = (entry["edges"], entry["fractions"])
        if not all(isinstance(v, list) and all(isinstance(x, int | float) for x in v) for v in values):
            raise ModelError(where, f"reference.{feature}: edges and fractions must be lists of numbers")
        ref = FeatureReference(tuple(float(e) for e in entry["edges"]), tuple(float(f) for f in entry["fractions"]))
        problem = ref.check()
        if problem:
            raise ModelError(where, f"reference.{feature}: {problem}")
        reference[feature] = ref
    return reference


def check_signature(card: ModelCard, signature: GraphSignature, where: str) -> None:
    """Refuse a card whose input, feature count or outputs disagree with the ONNX graph."""
    inputs = {t.name: t for t in signature.inputs}
    if card.input not in inputs:
        raise ModelError(where, f"card input {card.input!r} is not an input of the graph ({', '.join(inputs)})")
    if len(inputs) != 1:
        raise ModelError(where, f"the graph has {len(inputs)} inputs; streamer feeds exactly one")
    tensor = inputs[card.input]
    if tensor.element_type != "float":
        raise ModelError(where, f"input {card.input!r} is {tensor.element_type}, not float32")
    if len(tensor.shape) != 2:
        raise ModelError(where, f"input {card.input!r} has rank {len(tensor.shape)}, not [batch, features]")
    width = tensor.shape[1]
    if width is not None and width != len(card.features):
        raise ModelError(where, f"the graph takes {width} features, the card lists {len(card.features)}")
    outputs = {t.name: t for t in signature.outputs}
    for role, ref in (("score", card.score), ("label", card.label)):
        if ref is None:
            continue
        if ref.name not in outputs:
            raise ModelError(where, f"outputs.{role} reads {ref.name!r}, not an output of the graph")
        shape = outputs[ref.name].shape
        if ref.column is not None:
            if len(shape) != 2:
                raise ModelError(where, f"outputs.{role} takes column {ref.column} of a rank-{len(shape)} tensor")
            if shape[1] is not None and ref.column >= shape[1]:
                raise ModelError(where, f"outputs.{role} takes column {ref.column} of {shape[1]}")
