"""What ``streamer models import SOURCE`` can read, and how a SOURCE string is recognised.

A SOURCE is, in the order it is recognised:

1. an MLflow model URI, ``models:/NAME/ALIAS`` (or ``models:/NAME/VERSION``) or ``runs:/RUN_ID/PATH``
   (``mlflow_source``);
2. a directory holding an ``MLmodel`` file: a local MLflow model;
3. a file, by its extension, else by its first bytes: ``.onnx`` (an ONNX model), ``.json``/``.ubj`` (an XGBoost
   booster), ``.txt``/``.lgb`` or a file starting with ``tree`` (a LightGBM text model), ``.skops`` (a
   scikit-learn model saved with skops), ``.pkl``/``.pickle``/``.joblib`` or a file starting with a pickle
   opcode (a pickled scikit-learn, XGBoost or LightGBM model: read only with ``--trust-pickle``, because
   unpickling runs whatever code the file holds).

Every kind ends as a ``SourceModel``: what the converted model is checked against. Each library lives in its own
module (``sklearn_source``, ``xgboost_source``, ``lightgbm_source``, ``onnx_graph``), imported only when a
source of its kind is read: none of them, and no pickle loader, is ever imported by a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamer.core.errors import ImportRefused

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
KINDS_HELP = (
    "give a scikit-learn model (.skops, or .pkl/.joblib with --trust-pickle), an XGBoost booster (.json, .ubj), "
    "a LightGBM text model (.txt), an ONNX file (.onnx) or an MLflow model (models:/NAME/ALIAS, runs:/ID/PATH, "
    "or its directory)"
)


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


def _needs(extra: str, package: str, exc: ImportError) -> ImportRefused:
    return ImportRefused(f"{package} is not installed ({exc}): pip install 'streamer[{extra}]'")


def _head(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(16)


def kind_of(path: Path) -> str:
    """``onnx``, ``xgboost``, ``lightgbm``, ``skops``, ``pickle`` or ``mlflow`` for a local path; ImportRefused
    (one line) for a path that is missing or of no kind streamer reads."""
    if not path.exists():
        raise ImportRefused(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return "mlflow"
        raise ImportRefused(f"{path} is a directory without an MLmodel file (not an MLflow model): {KINDS_HELP}")
    suffix = path.suffix.lower()
    by_suffix = {".onnx": "onnx", ".json": "xgboost", ".ubj": "xgboost", ".txt": "lightgbm", ".lgb": "lightgbm"}
    by_suffix |= {".skops": "skops"} | dict.fromkeys(PICKLE_SUFFIXES, "pickle")
    if suffix in by_suffix:
        return by_suffix[suffix]
    head = _head(path)
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return "lightgbm"
    if head[:1] == b"\x80":  # the PROTO opcode every pickle since protocol 2 starts with
        return "pickle"
    if head.lstrip()[:1] == b"{":
        return "xgboost"
    raise ImportRefused(f"cannot tell what kind of model {path} is: {KINDS_HELP}")


def open_source(text: str, trust_pickle: bool, warn: Callable[[str], None], workdir: Path) -> SourceModel:
    """The model SOURCE names, loaded. ``warn`` gets the one-line warning of a trusted pickle; ``workdir`` is
    where an MLflow model is downloaded to (the caller removes it)."""
    if text.startswith(("models:/", "runs:/")):
        return _mlflow().open_uri(text, trust_pickle, warn, workdir)
    path = Path(text)
    kind = kind_of(path)
    if kind == "mlflow":
        return _mlflow().open_directory(path, trust_pickle, warn, text)
    return open_file(path, kind, trust_pickle, warn, origin=str(path))


def open_file(
    path: Path,
    kind: str,
    trust_pickle: bool,
    warn: Callable[[str], None],
    origin: str,
    trusted_types: Sequence[str] = (),
) -> SourceModel:
    """A model file of a known ``kind`` (``kind_of``); ``origin`` is how the description names it;
    ``trusted_types``: the types a skops file's author declared (an MLflow model's)."""
    if kind == "onnx":
        from streamer.model_import import onnx_graph

        return onnx_graph.OnnxSource(path.read_bytes(), origin)
    if kind == "xgboost":
        return _xgboost().XGBoostSource.from_file(path, origin)
    if kind == "lightgbm":
        return _lightgbm().LightGBMSource.from_file(path, origin)
    if kind == "skops":
        return wrap(_sklearn().load_skops(path, trust_pickle, warn, trusted_types), origin)
    if not trust_pickle:
        raise ImportRefused(
            f"{path} is a pickle, and unpickling runs any code the file holds: pass --trust-pickle if you trust "
            "whoever wrote it (or save the model with skops, or as ONNX)"
        )
    return wrap(_sklearn().load_pickle(path, warn), origin)


def wrap(model: Any, origin: str) -> SourceModel:
    """A model object (unpickled, or from skops) as a ``SourceModel``: XGBoost's and LightGBM's scikit-learn
    wrappers are read through their boosters; anything else must be a scikit-learn estimator."""
    module = type(model).__module__
    if module.startswith("xgboost"):
        return _xgboost().XGBoostSource.from_object(model, origin)
    if module.startswith("lightgbm"):
        return _lightgbm().LightGBMSource.from_object(model, origin)
    return _sklearn().SklearnSource.from_object(model, origin)


def _sklearn() -> Any:
    try:
        from streamer.model_import import sklearn_source
    except ImportError as exc:
        raise _needs("import", "scikit-learn or skl2onnx", exc) from None
    return sklearn_source


def _xgboost() -> Any:
    try:
        from streamer.model_import import xgboost_source
    except ImportError as exc:
        raise _needs("import", "xgboost or onnxmltools", exc) from None
    return xgboost_source


def _lightgbm() -> Any:
    try:
        from streamer.model_import import lightgbm_source
    except ImportError as exc:
        raise _needs("import", "lightgbm or onnxmltools", exc) from None
    return lightgbm_source


def _mlflow() -> Any:
    try:
        from streamer.model_import import mlflow_source
    except ImportError as exc:
        raise _needs("mlflow", "mlflow-skinny", exc) from None
    return mlflow_source
