"""Train the shipped demo model, `models/fraud/1`, reproducibly from a seeded synthetic data set.

    .venv/bin/python scripts/train_fraud_model.py --out models/fraud/1

The data are synthetic card transactions (numpy, seed 7); fraud is a noisy logistic rule of the features
(``streamer.synthetic.fraud_logit``, also behind the synthetic traffic of `streamer produce`). A gradient-boosted tree
classifier (scikit-learn) is exported to ONNX with skl2onnx (no ZipMap: plain tensors ``label`` and
``probabilities``), evaluated on a held-out 25 % split, and the model card is written with those figures and
the sha256 of the file. The same seed gives the same data; scikit-learn's trees are deterministic given
``random_state``; the ONNX bytes may differ across skl2onnx versions, which is why the card carries the hash.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from streamer.synthetic import FEATURES, SEED, labels, transactions

CARD = """\
name = "fraud"
version = 1
task = "binary-classification"
features = {features}
input = "float_input"
sha256 = "{sha256}"
threshold = 0.5

[outputs]
score = "probabilities[:,1]"
label = "label"

[card]
description = "Gradient-boosted trees (scikit-learn, {trees} trees of depth {depth}) scoring card transactions for fraud."
intended_use = "Demonstration and tests of streamer. Not for real fraud decisions: it has never seen a real transaction."
training_data = "{rows} synthetic transactions from scripts/train_fraud_model.py (numpy seed {seed}); fraud rate {rate:.3f}; 75/25 train/held-out split."
limitations = "Synthetic data from one hidden logistic rule; no missing values (allow_missing = false); no categorical features; calibration unchecked beyond log loss."
metrics = {{ auc = {auc:.4f}, accuracy = {accuracy:.4f}, log_loss = {log_loss:.4f}, held_out_rows = {held_out} }}
"""


def main() -> int:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/fraud/1"))
    parser.add_argument("--rows", type=int, default=40_000)
    args = parser.parse_args()

    x = transactions(args.rows)
    y = labels(x)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    trees, depth = 60, 3
    model = GradientBoostingClassifier(n_estimators=trees, max_depth=depth, random_state=SEED)
    model.fit(x_train, y_train)
    probability = model.predict_proba(x_test)[:, 1]
    onx = to_onnx(
        model,
        x_train[:1].astype(np.float32),
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onx.graph.input[0].name = "float_input"
    for node in onx.graph.node:
        node.input[:] = ["float_input" if i == "X" else i for i in node.input]
    # skl2onnx fills opset_import from a set, so its order follows Python's hash seed; sort it so that the same
    # seed gives the same bytes (and sha256) on every run.
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)
    data = onx.SerializeToString()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(data)
    card = CARD.format(
        features="[" + ", ".join(f'"{f}"' for f in FEATURES) + "]",
        sha256=hashlib.sha256(data).hexdigest(),
        trees=trees,
        depth=depth,
        rows=args.rows,
        seed=SEED,
        rate=y.mean(),
        auc=roc_auc_score(y_test, probability),
        accuracy=accuracy_score(y_test, (probability >= 0.5).astype(int)),
        log_loss=log_loss(y_test, probability),
        held_out=len(y_test),
    )
    (args.out / "card.toml").write_text(card)
    print(f"wrote {args.out}/model.onnx ({len(data)} bytes) and card.toml")
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
