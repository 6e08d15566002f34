"""XGBoost boosters (JSON or UBJ files, or the booster of a scikit-learn wrapper), converted by onnxmltools.

The task comes from the booster's objective: ``binary:logistic`` is a binary classifier, ``multi:softprob``
and ``multi:softmax`` a multiclass one (classes 0..k-1), ``reg:*`` a regressor. XGBoost keeps its split
thresholds in float32, as ONNX does, so they are never the cause of a refused proof.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxmltools
import xgboost as xgb
from onnxmltools.convert.common.data_types import FloatTensorType

from streamer.core.errors import ImportRefused
from streamer.model_import.source_model import Prediction

INPUT_NAME = "float_input"
TARGET_OPSET = 15  # the highest onnxmltools' XGBoost converter supports


class XGBoostSource:
    converter = f"onnxmltools {onnxmltools.__version__}"
    library = f"xgboost {xgb.__version__}"

    def __init__(self, booster: xgb.Booster, origin: str) -> None:
        self.booster = booster
        self.description = f"XGBoost booster from {origin}"
        names = booster.feature_names
        self.feature_names = tuple(names) if names else None
        self.n_features: int | None = booster.num_features()
        config = json.loads(booster.save_config())["learner"]
        self.objective = config["objective"]["name"]
        if self.objective.startswith("binary:logistic"):
            self.task, self.classes = "binary-classification", (0, 1)
        elif self.objective.startswith("multi:"):
            k = int(config["learner_model_param"]["num_class"])
            self.task, self.classes = "multiclass-classification", tuple(range(k))
        elif self.objective.startswith("reg:"):
            self.task, self.classes = "regression", ()
        else:
            raise ImportRefused(
                f"{origin}: XGBoost objective {self.objective!r} is not imported (binary:logistic, multi:softprob, "
                "multi:softmax and reg:* are)"
            )

    @classmethod
    def from_file(cls, path: Path, origin: str) -> XGBoostSource:
        try:
            booster = xgb.Booster(model_file=str(path))
        except xgb.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ImportRefused(f"{path}: not an XGBoost model XGBoost can read: {first}") from None
        return cls(booster, origin)

    @classmethod
    def from_object(cls, model: Any, origin: str) -> XGBoostSource:
        if isinstance(model, xgb.Booster):
            return cls(model, origin)
        if hasattr(model, "get_booster"):
            return cls(model.get_booster(), origin)
        raise ImportRefused(f"{origin} holds a {type(model).__name__}, not an XGBoost model streamer imports")

    def to_onnx(self, n_features: int) -> bytes:
        booster = self.booster.copy()
        # onnxmltools only reads features named f0, f1, ...: the names live on in the card instead.
        booster.feature_names = None
        booster.feature_types = None
        try:
            onx = onnxmltools.convert_xgboost(
                booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))], target_opset=TARGET_OPSET
            )
        except Exception as exc:  # onnxmltools raises RuntimeError, ValueError, NotImplementedError ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportRefused(f"onnxmltools cannot convert {self.description}: {first}") from None
        return onx.SerializeToString()  # type: ignore[no-any-return]

    def predict(self, matrix: np.ndarray) -> Prediction:
        dmatrix = xgb.DMatrix(matrix.astype(np.float32), missing=np.nan)
        values = np.asarray(self.booster.predict(dmatrix, validate_features=False), dtype=np.float64)
        if self.task == "regression":
            return Prediction(values=values.reshape(-1))
        if self.task == "binary-classification":
            probabilities = np.column_stack([1.0 - values, values])
        elif values.ndim == 1:  # multi:softmax answers the class, not probabilities
            raise ImportRefused(
                f"{self.description}: objective {self.objective} answers classes, not probabilities: train with "
                "multi:softprob"
            )
        else:
            probabilities = values
        return Prediction(probabilities=probabilities, labels=np.argmax(probabilities, axis=1))

    def split_thresholds(self) -> dict[int, np.ndarray]:
        return {}  # float32 already, like ONNX's
