"""Train the shipped demo models -- `models/fraud/1`, `examples/models/fraud-{online,forest,derived}/1` --
reproducibly.

    .venv/bin/python scripts/train_fraud_model.py --out models/fraud/1 --online-out examples/models/fraud-online/1 \
        --forest-out examples/models/fraud-forest/1 --derived-out examples/models/fraud-derived/1

The data are synthetic card transactions (numpy, seed 7); fraud is a noisy logistic rule of the features
(``streamer.synthetic.fraud_logit``, also behind the synthetic traffic of `streamer produce`). A gradient-boosted tree
classifier (scikit-learn) is exported to ONNX with skl2onnx (no ZipMap: plain tensors ``label`` and
``probabilities``), evaluated on a held-out 25 % split, and the model card is written with those figures and
the sha256 of the file. Both cards carry the training distribution of every feature (``[reference]``, decile
bins) for drift detection.

The online model is a standardised logistic regression (skl2onnx: Scaler + LinearClassifier) whose card has
an ``[online]`` table: served, it starts from these weights and learns from the labels (FTRL-Proximal, weights
in Redis). It lives outside ``models/`` so that ``fraud`` stays the only -- hence default -- model there.

The forest model is a small random forest (few shallow trees, at least a few dozen rows per leaf, so the file stays
near 100 kB): the third member, with the trees and the logistic model, of the shipped ensemble example. It too
lives outside ``models/``; its card has the same contract, metrics on the same held-out split and ``[reference]``.

The derived model is a standardised logistic regression on features that a scoring graph derives
(``examples/graphs/fraud-cascade.toml``: log1p of the amount, and the night-time hour bands as one-hot columns).
Its training rows are derived by that file's own transform stage, through ``streamer.core.graph.transforms``,
so that it is trained on exactly what the graph feeds it.

The ONNX export and the ``[reference]`` table are ``streamer models import``'s own
(``streamer.model_import.sklearn_source.export_sklearn``, ``streamer.model_import.card_writer.reference_table``).

The same seed gives the same data; scikit-learn's trees (and the forest, fitted on one core) are deterministic given
``random_state``; the ONNX bytes may differ across skl2onnx versions, which is why the card carries the hash.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tomllib
from pathlib import Path

import numpy as np

from streamer.core.graph import transforms
from streamer.core.graph.spec import parse_graph
from streamer.model_import.card_writer import reference_table
from streamer.model_import.sklearn_source import export_sklearn
from streamer.synthetic import FEATURES, SEED, labels, transactions

# The serving contract both cards share; each card adds its own tables, then [card], then [reference].
HEAD = """\
name = "{name}"
version = 1
task = "binary-classification"
features = {{features}}
input = "float_input"
sha256 = "{{sha256}}"
threshold = 0.5

[outputs]
score = "probabilities[:,1]"
label = "label"
"""
TRAINING = """\
training_data = "{rows} synthetic transactions from scripts/train_fraud_model.py (numpy seed {seed}); fraud rate {rate:.3f}; 75/25 train/held-out split."
"""
METRICS = """\
metrics = {{ auc = {auc:.4f}, accuracy = {accuracy:.4f}, log_loss = {log_loss:.4f}, held_out_rows = {held_out} }}
{extra}"""

CARD = (
    HEAD.format(name="fraud")
    + """
[card]
description = "Gradient-boosted trees (scikit-learn, {trees} trees of depth {depth}) scoring card transactions for fraud."
intended_use = "Demonstration and tests of streamer. Not for real fraud decisions: it has never seen a real transaction."
"""
    + TRAINING
    + """\
limitations = "Synthetic data from one hidden logistic rule; no missing values (allow_missing = false); no categorical features; calibration unchecked beyond log loss."
"""
    + METRICS
)

ONLINE_CARD = (
    HEAD.format(name="fraud-online")
    + """
[online]
learner = "ftrl"
alpha = 0.3
beta = 1.0
l1 = 0.0
l2 = 1.0

[card]
description = "Logistic regression on standardised features (scikit-learn), learning online from labels (FTRL-Proximal, weights shared in Redis)."
intended_use = "Demonstration of online learning under concept drift. Not for real fraud decisions."
"""
    + TRAINING
    + """\
limitations = "Linear in the raw features: it cannot represent the night-time interaction the trees see; starts from these weights, then follows the labels."
"""
    + METRICS
)


FOREST_CARD = (
    HEAD.format(name="fraud-forest")
    + """
[card]
description = "Random forest (scikit-learn, {forest_trees} trees of depth at most {forest_depth}, at least {forest_leaf} rows per leaf) scoring card transactions for fraud; a member of the three-model ensemble example."
intended_use = "Demonstration of ensembles in scoring graphs. Not for real fraud decisions: it has never seen a real transaction."
"""
    + TRAINING
    + """\
limitations = "Synthetic data from one hidden logistic rule; no missing values; few shallow trees, so its probabilities are averages of leaf frequencies and coarse; calibration unchecked beyond log loss."
"""
    + METRICS
)

DERIVED_CARD = (
    HEAD.format(name="fraud-derived")
    + """
[card]
description = "Logistic regression on standardised features, two of them derived by the scoring graph examples/graphs/fraud-cascade.toml (log1p of the amount; the hour's band, one-hot); the first phase of that graph's cascade."
intended_use = "Demonstration of a model reading features a scoring graph derives. Not for real fraud decisions."
"""
    + TRAINING
    + """\
limitations = "Reads log_amount and hour_band=early/late, which only the fraud-cascade graph computes: served alone, a request must carry them itself."
"""
    + METRICS
)
DERIVED_GRAPH = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "fraud-cascade.toml"
DERIVED_FEATURES = (
    "log_amount",
    "hour_band=early",
    "hour_band=late",
    "merchant_risk",
    "distance_km",
    "velocity_1h",
    "account_age_days",
)


def derived(x: np.ndarray) -> np.ndarray:
    """The rows as the fraud-cascade graph feeds its first model: its transform stage applied to ``x``."""
    spec = parse_graph(tomllib.loads(DERIVED_GRAPH.read_text()), str(DERIVED_GRAPH))
    columns = {name: x[:, i].astype(np.float64) for i, name in enumerate(FEATURES)}
    columns.update(transforms.apply(spec.stages["derived"].ops, columns, len(x)))
    return np.column_stack([columns[name] for name in DERIVED_FEATURES])


def main() -> int:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/fraud/1"))
    parser.add_argument("--online-out", type=Path, default=Path("examples/models/fraud-online/1"))
    parser.add_argument("--forest-out", type=Path, default=Path("examples/models/fraud-forest/1"))
    parser.add_argument("--derived-out", type=Path, default=Path("examples/models/fraud-derived/1"))
    parser.add_argument("--rows", type=int, default=40_000)
    args = parser.parse_args()

    x = transactions(args.rows)
    y = labels(x)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    reference = reference_table(FEATURES, x_train)
    trees, depth = 60, 3
    forest_trees, forest_depth, forest_leaf = 16, 7, 40
    forest = RandomForestClassifier(
        n_estimators=forest_trees,
        max_depth=forest_depth,
        min_samples_leaf=forest_leaf,
        n_jobs=1,
        random_state=SEED,
    )
    raw = (FEATURES, x_train, x_test, reference)
    derived_train, derived_test = derived(x_train), derived(x_test)
    on_derived = (DERIVED_FEATURES, derived_train, derived_test, reference_table(DERIVED_FEATURES, derived_train))
    models = (
        (args.out, CARD, GradientBoostingClassifier(n_estimators=trees, max_depth=depth, random_state=SEED), raw),
        (args.online_out, ONLINE_CARD, make_pipeline(StandardScaler(), LogisticRegression()), raw),
        (args.forest_out, FOREST_CARD, forest, raw),
        (args.derived_out, DERIVED_CARD, make_pipeline(StandardScaler(), LogisticRegression()), on_derived),
    )
    for out, template, model, (features, x_fit, x_held_out, reference_text) in models:
        model.fit(x_fit, y_train)
        probability = model.predict_proba(x_held_out)[:, 1]
        data = export_sklearn(model, x_fit[:1].astype(np.float32))
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.onnx").write_bytes(data)
        card = template.format(
            features="[" + ", ".join(f'"{f}"' for f in features) + "]",
            sha256=hashlib.sha256(data).hexdigest(),
            trees=trees,
            depth=depth,
            forest_trees=forest_trees,
            forest_depth=forest_depth,
            forest_leaf=forest_leaf,
            rows=args.rows,
            seed=SEED,
            rate=y.mean(),
            auc=roc_auc_score(y_test, probability),
            accuracy=accuracy_score(y_test, (probability >= 0.5).astype(int)),
            log_loss=log_loss(y_test, probability),
            held_out=len(y_test),
            extra=reference_text,
        )
        (out / "card.toml").write_text(card)
        print(f"wrote {out}/model.onnx ({len(data)} bytes) and card.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
