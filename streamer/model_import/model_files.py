"""A model file of a known kind opened as a ``SourceModel``: the kind told by extension or first bytes, and the
library module of that kind imported only then (a missing one is one line naming the extra to install)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamer.core.errors import ImportRefused
from streamer.model_import.source_model import SourceModel

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
KINDS_HELP = (
    "give a scikit-learn model (.skops, or .pkl/.joblib with --trust-pickle), an XGBoost booster (.json, .ubj), "
    "a LightGBM text model (.txt), an ONNX file (.onnx) or an MLflow model (models:/NAME/ALIAS, runs:/ID/PATH, "
    "or its directory)"
)


def needs(extra: str, package: str, exc: ImportError) -> ImportRefused:
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
        raise needs("import", "scikit-learn or skl2onnx", exc) from None
    return sklearn_source


def _xgboost() -> Any:
    try:
        from streamer.model_import import xgboost_source
    except ImportError as exc:
        raise needs("import", "xgboost or onnxmltools", exc) from None
    return xgboost_source


def _lightgbm() -> Any:
    try:
        from streamer.model_import import lightgbm_source
    except ImportError as exc:
        raise needs("import", "lightgbm or onnxmltools", exc) from None
    return lightgbm_source
