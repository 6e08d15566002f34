"""Small, seeded, real models of every kind ``streamer models import`` reads, and the files it measures on.

The data are the synthetic transactions (``streamer.synthetic``), rounded to float32 as serving feeds them.
Each model is trained here, in the test, in well under a second, and saved the way its library saves it:
scikit-learn with skops (MLflow's default format) or joblib (a pickle), XGBoost as JSON or UBJ, LightGBM as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from streamer import synthetic

FEATURES = tuple(synthetic.FEATURES)
LABEL = "is_fraud"
SKLEARN_KINDS = ("logreg", "forest", "gbm", "pipeline")
# Fitted on a DataFrame: the model carries its feature names (the others need --features).
NAMED_KINDS = ("gbm", "pipeline", "xgboost", "lightgbm")
KINDS = (*SKLEARN_KINDS, "xgboost", "lightgbm")


def dataset(rows: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Transactions (float32 values as float64) and their fraud labels."""
    x = synthetic.transactions(rows, seed=seed).astype(np.float32).astype(np.float64)
    return x, synthetic.labels(x)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    columns: dict[str, Any] = {name: x[:, i] for i, name in enumerate(FEATURES)}
    if y is not None:
        columns[LABEL] = y.astype(np.int64)
    pcsv.write_csv(pa.table(columns), path)
    return path


def train(kind: str, x: np.ndarray, y: np.ndarray) -> Any:
    """A small fitted model of ``kind`` (seeded)."""
    if kind == "xgboost":
        import xgboost as xgb

        data = xgb.DMatrix(x, label=y, feature_names=list(FEATURES))
        return xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1}, data, 20)
    if kind == "lightgbm":
        import lightgbm as lgb

        params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0, "num_threads": 1}
        return lgb.train(params, lgb.Dataset(x, label=y, feature_name=list(FEATURES)), 20)
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = {
        "logreg": lambda: LogisticRegression(max_iter=1000),
        "forest": lambda: RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0, n_jobs=1),
        "gbm": lambda: GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0),
        "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    }[kind]()
    if kind in NAMED_KINDS:
        import pandas as pd

        return model.fit(pd.DataFrame(x, columns=list(FEATURES)), y)
    return model.fit(x, y)


# skops refuses a tree's node storage unless trusted: these are saved as pickles and imported with --trust-pickle.
PICKLED_KINDS = ("forest", "gbm")


def save(kind: str, model: Any, folder: Path, pickle: bool = False) -> Path:
    """The model file as its library writes it (skops for scikit-learn, or joblib with ``pickle``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "xgboost":
        path = folder / "model.json"
        model.save_model(str(path))
    elif kind == "lightgbm":
        path = folder / "model.txt"
        model.save_model(str(path))
    elif pickle:
        import joblib

        path = folder / f"{kind}.joblib"
        joblib.dump(model, path)
    else:
        import skops.io as sio

        path = folder / f"{kind}.skops"
        sio.dump(model, path)
    return path


def positive_probability(kind: str, model: Any, x: np.ndarray) -> np.ndarray:
    """The source model's own probability of class 1 on float32 rows (what the imported version must give)."""
    rows = x.astype(np.float32)
    if kind == "xgboost":
        import xgboost as xgb

        return np.asarray(model.predict(xgb.DMatrix(rows, feature_names=list(FEATURES))))
    if kind == "lightgbm":
        return np.asarray(model.predict(rows.astype(np.float64)))
    if hasattr(model, "feature_names_in_"):
        import pandas as pd

        return np.asarray(model.predict_proba(pd.DataFrame(rows.astype(np.float64), columns=list(FEATURES)))[:, 1])
    return np.asarray(model.predict_proba(rows.astype(np.float64))[:, 1])
