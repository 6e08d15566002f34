"""scikit-learn estimators and pipelines: loaded (skops, or a trusted pickle), converted by skl2onnx.

The conversion (``export_sklearn``) is the one the shipped demo models are made with
(``scripts/train_fraud_model.py``): plain tensors ``label`` and ``probabilities`` (no ZipMap), the input named
``float_input``, opsets 17 and ai.onnx.ml 3 imported in a fixed order, so that the same model gives the same
bytes on every run.

Loading a pickle runs the code it holds: ``load_pickle`` is only called after ``--trust-pickle`` and says so
in one warning line. A skops file rebuilds objects without running code from the file, but only of the types
it is told to trust: beyond skops' defaults, those an MLflow model declares (``skops_trusted_types``, as MLflow
loads it) or, with ``--trust-pickle``, all the file names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.base import is_classifier, is_regressor

from streamer.core.errors import ImportRefused
from streamer.model_import.source_model import Prediction

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "float_input"


def export_sklearn(model: Any, sample: np.ndarray) -> bytes:
    """skl2onnx without ZipMap, input named ``float_input``, opset imports in a fixed order.

    ``sample``: at least one float32 row (its width is the input's); the values do not matter.
    """
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    onx = to_onnx(model, sample, options=options, target_opset=TARGET_OPSET)
    onx.graph.input[0].name = INPUT_NAME
    for node in onx.graph.node:
        node.input[:] = [INPUT_NAME if i == "X" else i for i in node.input]
    # skl2onnx fills opset_import from a set, so its order follows Python's hash seed; sort it so that the same
    # seed gives the same bytes (and sha256) on every run.
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)
    return onx.SerializeToString()  # type: ignore[no-any-return]


def load_pickle(path: Path, warn: Callable[[str], None]) -> Any:
    """Unpickle ``path`` (joblib reads plain pickles too). Only after ``--trust-pickle``."""
    import joblib

    warn(f"loading the pickle {path} runs the code it holds (--trust-pickle)")
    try:
        return joblib.load(path)
    except Exception as exc:  # whatever the pickle raises while it runs
        raise ImportRefused(f"{path}: cannot unpickle it: {type(exc).__name__}: {exc}") from None


def load_skops(path: Path, trust: bool, warn: Callable[[str], None], declared: Sequence[str] = ()) -> Any:
    """A skops file. Types skops does not trust by default are loaded only when ``declared`` (an MLflow model's
    ``skops_trusted_types``, which MLflow itself loads it with) or with ``--trust-pickle``: skops distrusts some
    of scikit-learn's own, e.g. a tree's node arrays, which a crafted file can point out of bounds."""
    try:
        import skops.io as sio
    except ImportError as exc:
        raise ImportRefused(f"reading {path} needs skops ({exc}): pip install 'streamer[import]'") from None
    try:
        untrusted = sio.get_untrusted_types(file=path)
        undeclared = [t for t in untrusted if t not in declared]
        if undeclared and not trust:
            raise ImportRefused(
                f"{path} holds types skops does not trust by default ({', '.join(undeclared[:5])}): pass "
                "--trust-pickle if you trust whoever wrote the file"
            )
        if undeclared:
            warn(f"trusting the types {', '.join(undeclared[:5])} of {path} (--trust-pickle)")
        return sio.load(path, trusted=untrusted or None)
    except ImportRefused:
        raise
    except Exception as exc:  # a corrupt archive, a type skops cannot rebuild
        raise ImportRefused(f"{path}: cannot read it with skops: {type(exc).__name__}: {exc}") from None


def _trees(estimator: Any) -> list[Any]:
    """The fitted ``tree_`` objects of a tree model (a tree, a forest, gradient boosting), else []."""
    if hasattr(estimator, "tree_"):
        return [estimator.tree_]
    members = getattr(estimator, "estimators_", None)
    if members is None:
        return []
    flat = np.asarray(members, dtype=object).ravel().tolist()
    return [m.tree_ for m in flat if hasattr(m, "tree_")]


class SklearnSource:
    converter = f"skl2onnx {skl2onnx.__version__}"
    library = f"scikit-learn {sklearn.__version__}"

    def __init__(self, model: Any, origin: str) -> None:
        self.model = model
        self.final = model.steps[-1][1] if hasattr(model, "steps") else model
        steps = " -> ".join(type(s).__name__ for _, s in model.steps) if hasattr(model, "steps") else ""
        self.description = f"scikit-learn {type(model).__name__}{f' ({steps})' if steps else ''} from {origin}"
        names = getattr(model, "feature_names_in_", None)
        self.feature_names = tuple(str(n) for n in names) if names is not None else None
        self.n_features: int | None = getattr(model, "n_features_in_", None)
        if is_classifier(self.final):
            classes = tuple(np.asarray(self.final.classes_).tolist())
            if not all(isinstance(c, int | bool) for c in classes):
                raise ImportRefused(
                    f"the classes of {origin} are {list(classes)[:5]}: a prediction's label is a number, so train "
                    "on classes coded 0..k-1"
                )
            self.classes = classes
            self.task = "binary-classification" if len(classes) == 2 else "multiclass-classification"
        elif is_regressor(self.final):
            self.classes = ()
            self.task = "regression"
        else:
            raise ImportRefused(f"{origin} holds a {type(self.final).__name__}, neither a classifier nor a regressor")

    @classmethod
    def from_object(cls, model: Any, origin: str) -> SklearnSource:
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise ImportRefused(
                f"{origin} holds a {type(model).__module__}.{type(model).__name__}, not a scikit-learn estimator, "
                "an XGBoost or a LightGBM model"
            )
        if not hasattr(model, "n_features_in_"):
            raise ImportRefused(f"{origin} holds an estimator that is not fitted")
        return cls(model, origin)

    def to_onnx(self, n_features: int) -> bytes:
        try:
            return export_sklearn(self.model, np.zeros((1, n_features), dtype=np.float32))
        except Exception as exc:  # skl2onnx: MissingShapeCalculator, RuntimeError, NotImplementedError ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportRefused(
                f"skl2onnx cannot convert {self.description}: {type(exc).__name__}: {first} (a pipeline step or "
                "option the converter does not support?)"
            ) from None

    def predict(self, matrix: np.ndarray) -> Prediction:
        rows = matrix.astype(np.float64)
        with warnings.catch_warnings():  # fitted on a DataFrame, given an array in the same column order
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self.task == "regression":
                return Prediction(values=np.asarray(self.model.predict(rows), dtype=np.float64).reshape(-1))
            return Prediction(probabilities=self.model.predict_proba(rows), labels=np.asarray(self.model.predict(rows)))

    def split_thresholds(self) -> dict[int, np.ndarray]:
        """The float64 thresholds of the trees, per input column; none for a pipeline (its trees see the
        transformed columns, not the input's)."""
        if self.final is not self.model:
            return {}
        found: dict[int, list[np.ndarray]] = {}
        for tree in _trees(self.final):
            features, thresholds = np.asarray(tree.feature), np.asarray(tree.threshold, dtype=np.float64)
            for feature in np.unique(features[features >= 0]).tolist():
                found.setdefault(feature, []).append(thresholds[features == feature])
        return {f: np.concatenate(parts) for f, parts in found.items()}
