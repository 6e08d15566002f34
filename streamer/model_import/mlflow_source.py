"""MLflow models: ``models:/NAME/ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH`` or a local model
directory, read through ``mlflow-skinny`` (the ``mlflow`` extra).

A URI is resolved by MLflow itself (``mlflow.artifacts.download_artifacts``: the tracking and registry stores
are the ones MLflow is configured with, ``MLFLOW_TRACKING_URI`` or ``--tracking-uri``) into a local directory.
The directory's ``MLmodel`` file says which flavors it holds; the first streamer reads, in this order, is used:

- ``onnx``: the ONNX file as is;
- ``xgboost``: the booster file;
- ``lightgbm``: the text model of a ``lightgbm.Booster``; a scikit-learn wrapper is a pickle (``--trust-pickle``);
- ``sklearn``: a skops file (with the ``skops_trusted_types`` it was logged with, as MLflow loads it), or a
  pickle / cloudpickle file (``--trust-pickle``).

The model's *signature* gives the feature names and their order (a column-based input schema); a tensor
signature names none, and the names then come from the model or ``--features``. ``MLmodel`` is read as YAML
here rather than through ``mlflow.models.Model``, which needs pandas, not part of ``mlflow-skinny``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.artifacts
import yaml
from mlflow.exceptions import MlflowException

from streamer.core.errors import ImportRefused
from streamer.model_import import model_files
from streamer.model_import.source_model import SourceModel

FLAVORS = ("onnx", "xgboost", "lightgbm", "sklearn")


def set_tracking_uri(uri: str) -> None:
    mlflow.set_tracking_uri(uri)


def open_uri(uri: str, trust_pickle: bool, warn: Callable[[str], None], workdir: Path) -> SourceModel:
    """Download the model ``uri`` names into ``workdir`` and open it."""
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(workdir))
    except MlflowException as exc:
        first = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
        raise ImportRefused(f"{uri}: MLflow cannot resolve it: {first}") from None
    except OSError as exc:
        raise ImportRefused(f"{uri}: cannot download it: {exc}") from None
    path = Path(local)
    if not (path / "MLmodel").is_file():
        raise ImportRefused(f"{uri} is not an MLflow model (no MLmodel file in it)")
    return open_directory(path, trust_pickle, warn, uri)


def signature_names(mlmodel: dict[str, Any]) -> tuple[str, ...] | None:
    """The input column names of the signature, in order; None for no signature or a tensor signature."""
    inputs = (mlmodel.get("signature") or {}).get("inputs")
    if not inputs:
        return None
    try:
        specs = json.loads(inputs)
    except (TypeError, ValueError):
        return None
    names = [spec.get("name") for spec in specs if isinstance(spec, dict)]
    if not names or any(not isinstance(n, str) for n in names) or any(s.get("type") == "tensor" for s in specs):
        return None
    return tuple(names)


def open_directory(path: Path, trust_pickle: bool, warn: Callable[[str], None], origin: str) -> SourceModel:
    """A local MLflow model directory: its first readable flavor, named by its signature."""
    try:
        mlmodel = yaml.safe_load((path / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ImportRefused(f"{path / 'MLmodel'}: unreadable: {exc}") from None
    flavors = mlmodel.get("flavors") or {}
    chosen = next((f for f in FLAVORS if f in flavors), None)
    if chosen is None:
        raise ImportRefused(
            f"{origin} has the MLflow flavors {', '.join(flavors) or 'none'}; streamer imports {', '.join(FLAVORS)}"
        )
    flavor = flavors[chosen]
    described = f"{origin} (MLflow {chosen} flavor)"
    if chosen == "onnx":
        model = model_files.open_file(path / flavor["data"], "onnx", trust_pickle, warn, described)
    elif chosen == "xgboost":
        model = model_files.open_file(path / flavor["data"], "xgboost", trust_pickle, warn, described)
    elif chosen == "lightgbm":
        is_booster = str(flavor.get("model_class", "lightgbm.basic.Booster")).endswith("Booster")
        kind = "lightgbm" if is_booster else "pickle"
        model = model_files.open_file(path / flavor["data"], kind, trust_pickle, warn, described)
    else:
        file = path / flavor["pickled_model"]
        kind = "skops" if flavor.get("serialization_format") == "skops" else "pickle"
        declared = flavor.get("skops_trusted_types") or ()
        model = model_files.open_file(file, kind, trust_pickle, warn, described, declared)
    names = signature_names(mlmodel)
    if names is None:
        return model
    if model.n_features is not None and len(names) != model.n_features:
        raise ImportRefused(
            f"{origin}: the MLflow signature names {len(names)} inputs, the model takes {model.n_features}"
        )
    if model.feature_names is not None:  # the model's own order is the one its input follows
        if set(model.feature_names) != set(names):
            raise ImportRefused(
                f"{origin}: the MLflow signature names {list(names)}, the model was fitted on "
                f"{list(model.feature_names)}"
            )
        return model
    model.feature_names = names
    return model
