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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.model_import.model_files import kind_of, needs, open_file
from streamer.model_import.source_model import SourceModel


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


def _mlflow() -> Any:
    try:
        from streamer.model_import import mlflow_source
    except ImportError as exc:
        raise needs("mlflow", "mlflow-skinny", exc) from None
    return mlflow_source
