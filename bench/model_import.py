"""Time to import each kind of model: ``streamer models import`` as a user runs it, and the import alone.

    .venv/bin/python bench/model_import.py [--rows 20000] [--repeat 3]

Each kind is trained once (seeded; the models of tests/model_import_data.py at ``--rows`` training rows), saved
as its library saves it, then imported ``--repeat`` times into a fresh repository with a reference (the training
rows; 1,000 drawn for the proof) and a holdout (a quarter of ``--rows``, labelled):

- ``command``: wall time of ``python -m streamer models import ...`` (interpreter start, the command's imports,
  the libraries of that kind, conversion, proof, holdout metrics, publish): what a user waits;
- ``import``: ``ImportResult.seconds`` of the same steps in one warm process (libraries already imported);
- ``(startup)``: ``python -m streamer --version``, the part of every command that is not the import.

Medians of the repeats; figures on a shared machine vary with its load (the table says the load average).
Appends to ``bench/results/model_import.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, record

from streamer.model_import.importer import ImportOptions, import_model
from tests.model_import_data import FEATURES, LABEL, NAMED_KINDS, dataset, save, train, write_csv

KINDS = ("logreg", "forest", "gbm", "pipeline", "xgboost", "lightgbm", "onnx", "mlflow")


def prepare(kind: str, folder: Path, x: np.ndarray, y: np.ndarray) -> tuple[str, list[str], dict[str, str]]:
    """The SOURCE, the extra flags and the environment of one kind's import."""
    env: dict[str, str] = {}
    flags = [] if kind in NAMED_KINDS or kind == "mlflow" else ["--features", ",".join(FEATURES)]
    if kind in ("forest", "gbm"):
        flags.append("--trust-pickle")  # skops distrusts a tree's node storage unless told
    if kind == "lightgbm":
        flags.append("--round-thresholds")
    if kind == "onnx":
        from skl2onnx import to_onnx

        path = folder / "model.onnx"
        path.write_bytes(to_onnx(train("gbm", x, y), x[:1].astype(np.float32)).SerializeToString())
        return str(path), flags, env
    if kind == "mlflow":
        import mlflow
        import mlflow.sklearn
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        uri = (folder / "mlruns").as_uri()
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                train("forest", x, y),
                name="model",
                signature=ModelSignature(inputs=Schema([ColSpec("double", f) for f in FEATURES])),
                registered_model_name="bench",
                skops_trusted_types=["sklearn.tree._tree.Tree"],
            )
        mlflow.MlflowClient().set_registered_model_alias("bench", "champion", 1)
        env |= {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true"}
        return "models:/bench@champion", flags, env
    return str(save(kind, train(kind, x, y), folder / kind)), flags, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="streamer-bench-import-"))
    x, y = dataset(args.rows + args.rows // 4, seed=3)
    train_x, train_y = x[: args.rows], y[: args.rows]
    reference = write_csv(folder / "reference.csv", train_x)
    holdout = write_csv(folder / "holdout.csv", x[args.rows :], y[args.rows :])
    data = ["--reference", str(reference), "--holdout", str(holdout), "--label-column", LABEL]
    rows = []
    for kind in KINDS:
        source, flags, env = prepare(kind, folder, train_x, train_y)
        command_s, import_s = [], []
        for attempt in range(args.repeat):
            models = folder / f"models-{kind}-{attempt}"
            models.mkdir()
            environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
            environ |= {"PYTHONPATH": str(ROOT), "STREAMER_MODELS_DIR": str(models), **env}
            argv = [sys.executable, "-m", "streamer", "models", "import", source, "--name", kind, *data, *flags]
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=folder)
            command_s.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise SystemExit(f"{kind}: {done.stderr}")
            os.environ.update(env)
            result = import_model(
                ImportOptions(
                    source,
                    kind,
                    folder / f"warm-{kind}-{attempt}",
                    trust_pickle="--trust-pickle" in flags,
                    round_thresholds="--round-thresholds" in flags,
                    features=FEATURES if "--features" in flags else None,
                    reference=reference,
                    holdout=holdout,
                    label_column=LABEL,
                ),
                None,
                lambda _: None,
            )
            import_s.append(result.seconds)
        rows.append({"kind": kind, "command_s": statistics.median(command_s), "import_s": statistics.median(import_s)})
    startup = []
    for _ in range(args.repeat):  # the fixed part of every command: the interpreter and the streamer command
        environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | {"PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "streamer", "--version"], capture_output=True, env=environ, check=True)
        startup.append(time.perf_counter() - started)
    rows.append({"kind": "(startup)", "command_s": statistics.median(startup), "import_s": 0.0})
    load = os.getloadavg()[0]
    print(f"{'kind':10} {'command s':>10} {'import s':>9}   ({args.rows} training rows; load average {load:.1f})")
    for row in rows:
        print(f"{row['kind']:10} {row['command_s']:10.2f} {row['import_s']:9.2f}")
    record("model_import", {"rows": args.rows, "repeat": args.repeat, "load_average": load, "kinds": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
