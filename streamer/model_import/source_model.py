"""The contract every model source meets, whatever its library: a ``SourceModel`` and what it predicts.

The per-library modules (``sklearn_source``, ``xgboost_source``, ``lightgbm_source``, ``onnx_graph``,
``mlflow_source``) implement it and import only this module, never the dispatch (``sources``, ``model_files``)
that imports them lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model answers for rows: class probabilities ([rows, classes], in ``SourceModel.classes`` order)
    and labels, or a regressor's values."""

    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    values: np.ndarray | None = None


class SourceModel(Protocol):
    """A model as its library holds it, before conversion.

    ``classes``: the class labels in probability-column order (empty for a regressor). ``feature_names``: the
    input's column names where the model or its metadata carries them. ``predict`` takes float32 rows (the
    source gets exactly the values ONNX will see). ``split_thresholds``: per input column, the float64 split
    thresholds of its trees (empty where the library keeps float32 thresholds, or for a pipeline whose trees
    see transformed columns), for diagnosing a refused proof.
    """

    description: str
    library: str
    converter: str
    task: str
    classes: tuple[Any, ...]
    feature_names: tuple[str, ...] | None
    n_features: int | None

    def to_onnx(self, n_features: int) -> bytes: ...

    def predict(self, matrix: np.ndarray) -> Prediction: ...

    def split_thresholds(self) -> dict[int, np.ndarray]: ...
