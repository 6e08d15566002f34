"""LightGBM boosters (text model files, or the booster of a scikit-learn wrapper), converted by onnxmltools.

The task comes from the booster's objective (``binary``, ``multiclass``/``multiclassova``, or a regression
objective). LightGBM keeps its split thresholds as float64 and the ONNX tree compares in float32: a feature
value between a threshold and its float32 rounding goes the other way (``split_thresholds`` lists them so that
a refused proof can name one). With ``round_thresholds`` (``--round-thresholds``) a copy of the booster whose
numerical thresholds are rounded *down* to float32 values is converted instead: for a float32 input ``x``,
``x <= t`` holds exactly when ``x <= below(t)`` does, so serving (which always feeds float32) answers like the
source -- the proof, still against the original booster, checks it. scikit-learn's converter does the same for
its trees by itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnxmltools
from onnxmltools.convert.common.data_types import FloatTensorType

from streamer.core.errors import ImportRefused
from streamer.model_import.source_model import Prediction

INPUT_NAME = "float_input"
TARGET_OPSET = 15  # the highest onnxmltools' LightGBM converter supports
_REGRESSION = ("regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma", "tweedie")


def float32_below(threshold: float) -> float:
    """The largest float32 value not above ``threshold``."""
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def rounded_thresholds(model_text: str) -> str:
    """A LightGBM text model with every numerical split threshold rounded down to float32 (categorical splits,
    whose ``threshold`` indexes their categories, untouched); without ``tree_sizes``, which no longer hold."""
    lines = model_text.split("\n")
    threshold_at: int | None = None
    decisions: list[int] | None = None
    for index, line in enumerate(lines):
        if line.startswith("Tree="):
            threshold_at, decisions = None, None
        elif line.startswith("threshold="):
            threshold_at = index
        elif line.startswith("decision_type="):
            decisions = [int(v) for v in line.split("=", 1)[1].split()]
        if threshold_at is not None and decisions is not None:  # both lines of this tree seen, in either order
            values = lines[threshold_at].split("=", 1)[1].split()
            rounded = [v if decisions[i] & 1 else repr(float32_below(float(v))) for i, v in enumerate(values)]
            lines[threshold_at] = "threshold=" + " ".join(rounded)
            threshold_at, decisions = None, None
    return re.sub(r"(?m)^tree_sizes=.*\n", "", "\n".join(lines))


def _default_names(names: list[str]) -> bool:
    return all(n == f"Column_{i}" for i, n in enumerate(names))


class LightGBMSource:
    converter = f"onnxmltools {onnxmltools.__version__}"
    library = f"lightgbm {lgb.__version__}"

    def __init__(self, booster: lgb.Booster, origin: str) -> None:
        self.booster = booster
        self.round_thresholds = False
        self.description = f"LightGBM booster from {origin}"
        self.dump = booster.dump_model()
        names = list(self.dump.get("feature_names") or [])
        self.feature_names = tuple(names) if names and not _default_names(names) else None
        self.n_features: int | None = booster.num_feature()
        objective = str(self.dump.get("objective", "")).split()[0] if self.dump.get("objective") else ""
        if objective == "binary":
            self.task, self.classes = "binary-classification", (0, 1)
        elif objective.startswith("multiclass"):
            k = int(self.dump["num_class"])
            self.task, self.classes = "multiclass-classification", tuple(range(k))
        elif objective in _REGRESSION:
            self.task, self.classes = "regression", ()
        else:
            raise ImportRefused(f"{origin}: LightGBM objective {objective!r} is not imported")

    @classmethod
    def from_file(cls, path: Path, origin: str) -> LightGBMSource:
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ImportRefused(f"{path}: not a LightGBM model LightGBM can read: {first}") from None
        return cls(booster, origin)

    @classmethod
    def from_object(cls, model: Any, origin: str) -> LightGBMSource:
        if isinstance(model, lgb.Booster):
            return cls(model, origin)
        if hasattr(model, "booster_"):
            return cls(model.booster_, origin)
        raise ImportRefused(f"{origin} holds a {type(model).__name__}, not a LightGBM model streamer imports")

    def to_onnx(self, n_features: int) -> bytes:
        booster = self.booster
        if self.round_thresholds:
            booster = lgb.Booster(model_str=rounded_thresholds(booster.model_to_string()))
        try:
            onx = onnxmltools.convert_lightgbm(
                booster,
                initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                target_opset=TARGET_OPSET,
                zipmap=False,
            )
        except Exception as exc:  # onnxmltools raises RuntimeError, ValueError, NotImplementedError ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportRefused(f"onnxmltools cannot convert {self.description}: {first}") from None
        return onx.SerializeToString()  # type: ignore[no-any-return]

    def predict(self, matrix: np.ndarray) -> Prediction:
        values = np.asarray(self.booster.predict(matrix.astype(np.float64)), dtype=np.float64)
        if self.task == "regression":
            return Prediction(values=values.reshape(-1))
        probabilities = np.column_stack([1.0 - values, values]) if values.ndim == 1 else values
        return Prediction(probabilities=probabilities, labels=np.argmax(probabilities, axis=1))

    def split_thresholds(self) -> dict[int, np.ndarray]:
        found: dict[int, list[float]] = {}
        stack = [tree["tree_structure"] for tree in self.dump.get("tree_info", [])]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            if node.get("decision_type") == "<=":  # categorical splits (==) have no numeric threshold
                found.setdefault(int(node["split_feature"]), []).append(float(node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
        return {f: np.asarray(values, dtype=np.float64) for f, values in found.items()}
