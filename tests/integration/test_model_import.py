"""``streamer models import`` with real converters and real models trained here (small, seeded).

Every kind is converted, proved equal, published and then scored by the worker's own loading and output reading
like its source; converter defects provoked on purpose are refused with their cause; user mistakes are one line
and exit code 2; an MLflow model is imported by alias from a local tracking store; the holdout gate refuses a
worse version, ``--force`` publishes it, ``--canary`` deploys it through the control channel and a
``model-imported`` event says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from onnx import helper

from streamer.adapters import devstack, model_repository
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.adapters.redis_control import ControlChannel
from streamer.cli import main
from streamer.core.errors import ImportRefused
from streamer.model_import import sklearn_source
from streamer.model_import.data import read_table, rows_for
from streamer.model_import.importer import ImportOptions, import_model
from tests.conftest import REPO
from tests.model_import_data import (
    FEATURES,
    KINDS,
    LABEL,
    NAMED_KINDS,
    PICKLED_KINDS,
    dataset,
    positive_probability,
    save,
    train,
    write_csv,
)

WARNINGS: list[str] = []


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("import-data")
    x, y = dataset(2400)
    train_x, train_y, hold_x, hold_y = x[:1600], y[:1600], x[1600:], y[1600:]
    return {
        "folder": folder,
        "x": train_x,
        "y": train_y,
        "reference": write_csv(folder / "reference.csv", train_x),
        "holdout": write_csv(folder / "holdout.csv", hold_x, hold_y),
        "hold_x": hold_x,
    }


def options(models: Path, source: Path | str, name: str, data: dict[str, object], **more: object) -> ImportOptions:
    return ImportOptions(
        source=str(source),
        name=name,
        models_dir=models,
        reference=data["reference"],  # type: ignore[arg-type]
        holdout=data["holdout"],  # type: ignore[arg-type]
        label_column=LABEL,
        sample=400,
        **more,  # type: ignore[arg-type]
    )


def served_probability(version_dir: Path, holdout: Path) -> np.ndarray:
    """What a worker serves as ``score`` for the holdout rows: the published files loaded and read as serving."""
    model = model_repository.load_version(version_dir)
    rows = rows_for(model.card, read_table(holdout, "holdout"))
    return model_repository.score_rows(model, rows.matrix).score


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    settings = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    settings.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args], capture_output=True, text=True, timeout=240, cwd=cwd, env=settings
    )


@pytest.fixture
def streamer_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``streamer ARGS`` in this process (``streamer.cli.main``, exit code and both streams captured): the same
    code path as the command, without an interpreter start per call (a few seconds with the converters' imports).
    Each test also runs the real command at least once."""

    def invoke(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        for name in [k for k in os.environ if k.startswith("STREAMER_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["streamer", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return invoke


def one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_every_kind_is_converted_proved_published_and_served_like_its_source(
    data: dict[str, object], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    x, y, hold_x = data["x"], data["y"], data["hold_x"]
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and isinstance(hold_x, np.ndarray)
    for kind in KINDS:
        model = train(kind, x, y)
        source = save(kind, model, tmp_path / kind, pickle=kind in PICKLED_KINDS)
        given = None if kind in NAMED_KINDS else FEATURES
        more = {"round_thresholds": kind == "lightgbm", "features": given, "trust_pickle": kind in PICKLED_KINDS}
        result = import_model(options(models, source, f"imp-{kind}", data, **more), None, WARNINGS.append)
        assert result.path == models / f"imp-{kind}" / "1" and result.proof.equal
        card = result.model.card
        assert card.features == FEATURES and card.task == "binary-classification"
        assert card.card["equality"]["rows"] == 400 + len(hold_x) and card.card["metrics"]["rows"] == len(hold_x)
        assert set(card.reference) == set(FEATURES)
        served = served_probability(result.path, data["holdout"])  # type: ignore[arg-type]
        np.testing.assert_allclose(served, positive_probability(kind, model, hold_x), atol=1e-5, rtol=0)
    pickled = tmp_path / "gbm" / "gbm.joblib"
    assert f"loading the pickle {pickled} runs the code it holds (--trust-pickle)" in WARNINGS
    # XGBoost's binary UBJ format; a tree model saved with skops, whose tree storage skops trusts only when told
    # (--trust-pickle, one warning line); an ONNX file as skl2onnx writes it by default (ZipMap): its serving
    # form reads the probability tensor instead.
    booster = train("xgboost", x, y)
    booster.save_model(str(tmp_path / "model.ubj"))
    import_model(options(models, tmp_path / "model.ubj", "imp-ubj", data), None, WARNINGS.append)
    gbm = train("gbm", x, y)
    skops_file = save("gbm", gbm, tmp_path / "skops")
    with pytest.raises(ImportRefused, match=r"types skops does not trust by default \(sklearn.tree._tree.Tree\)"):
        import_model(options(models, skops_file, "imp-skops", data), None, WARNINGS.append)
    import_model(options(models, skops_file, "imp-skops", data, trust_pickle=True), None, WARNINGS.append)
    assert WARNINGS[-1] == f"trusting the types sklearn.tree._tree.Tree of {skops_file} (--trust-pickle)"
    from skl2onnx import to_onnx

    (tmp_path / "zipmap.onnx").write_bytes(to_onnx(gbm, x[:1].astype(np.float32)).SerializeToString())
    zipped = import_model(
        options(models, tmp_path / "zipmap.onnx", "imp-onnx", data, features=FEATURES), None, WARNINGS.append
    )
    assert str(zipped.model.card.score).endswith("[:,1]")
    for name in ("imp-ubj", "imp-skops", "imp-onnx"):
        served = served_probability(models / name / "1", data["holdout"])  # type: ignore[arg-type]
        source_model, kind = (booster, "xgboost") if name == "imp-ubj" else (gbm, "gbm")
        np.testing.assert_allclose(served, positive_probability(kind, source_model, hold_x), atol=1e-5, rtol=0)


def test_a_regressor_and_a_multiclass_model(data: dict[str, object], tmp_path: Path) -> None:
    import xgboost as xgb
    from sklearn.ensemble import GradientBoostingRegressor

    x = data["x"]
    assert isinstance(x, np.ndarray)
    target = 2 * x[:, 0] + x[:, 3]
    write_csv(tmp_path / "hold.csv", x[:300], target[:300])
    regressor = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x, target)
    result = import_model(
        ImportOptions(
            str(save("gbm", regressor, tmp_path)),
            "amount-model",
            tmp_path / "models",
            trust_pickle=True,
            features=FEATURES,
            holdout=tmp_path / "hold.csv",
            label_column=LABEL,
        ),
        None,
        WARNINGS.append,
    )
    assert result.model.card.task == "regression" and result.proof.measure == "relative"
    assert result.metrics is not None and result.metrics.rmse is not None and result.metrics.auc is None
    classes = (x[:, 1] > 6).astype(int) + (x[:, 1] > 18)
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "seed": 0}, xgb.DMatrix(x, label=classes), 5)
    booster.save_model(str(tmp_path / "multi.json"))
    write_csv(tmp_path / "multi-hold.csv", x[:300], classes[:300])
    multi = import_model(
        ImportOptions(
            str(tmp_path / "multi.json"),
            "hour-class",
            tmp_path / "models",
            features=FEATURES,
            holdout=tmp_path / "multi-hold.csv",
            label_column=LABEL,
        ),
        None,
        WARNINGS.append,
    )
    assert multi.model.card.task == "multiclass-classification"
    assert str(multi.model.card.score) == "predicted_probability"  # the probability of the predicted class
    score = served_probability(multi.path, tmp_path / "multi-hold.csv")
    np.testing.assert_allclose(score, booster.predict(xgb.DMatrix(x[:300].astype(np.float32))).max(axis=1), atol=1e-5)


def test_a_converter_that_reorders_classes_is_refused_with_its_cause(
    data: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sklearn_source.export_sklearn

    def reordering(model: object, sample: np.ndarray) -> bytes:
        """skl2onnx's graph with its probability columns swapped (a Gather on axis 1): the defect, on purpose."""
        graph = onnx.load_from_string(real(model, sample))
        output = next(o for o in graph.graph.output if o.name == "probabilities")
        output.name = "probabilities_in_order"
        for node in graph.graph.node:
            node.output[:] = ["probabilities_in_order" if o == "probabilities" else o for o in node.output]
        graph.graph.initializer.append(helper.make_tensor("swap", onnx.TensorProto.INT64, [2], [1, 0]))
        graph.graph.node.append(
            helper.make_node("Gather", ["probabilities_in_order", "swap"], ["probabilities"], axis=1)
        )
        output.name = "probabilities"
        return graph.SerializeToString()  # type: ignore[no-any-return]

    monkeypatch.setattr(sklearn_source, "export_sklearn", reordering)
    source = save("logreg", train("logreg", data["x"], data["y"]), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ImportRefused) as refused:
        import_model(options(tmp_path / "models", source, "swapped", data, features=FEATURES), None, WARNINGS.append)
    message = str(refused.value)
    assert "not published" in message and "likely cause: class order" in message and "[1, 0]" in message
    assert re.search(r"first: holdout row \d+ column \d \(class \d\): probability", message), message
    assert not (tmp_path / "models" / "swapped").exists() or not list((tmp_path / "models" / "swapped").iterdir())


def test_a_float64_split_threshold_is_refused_with_its_cause_and_rounding_fixes_it(
    data: dict[str, object], tmp_path: Path
) -> None:
    x = data["x"]
    assert isinstance(x, np.ndarray)
    booster = train("lightgbm", x, data["y"])  # type: ignore[arg-type]
    text = booster.model_to_string()
    # The first tree's root: its threshold set just below a value the data hold (float64, between two float32s).
    first = re.search(r"Tree=0\n.*?split_feature=(\S+).*?threshold=(\S+)", text, re.S)
    assert first is not None
    feature = int(first.group(1))
    column = x[:, feature]
    value = np.float32(column[column > float(first.group(2))].min())
    threshold = np.nextafter(np.float64(value), -np.inf)
    assert np.float32(threshold) == value  # ONNX's float32 tree sees the value *on* the threshold
    thresholds = f"threshold={first.group(2)}"
    text = text.replace(thresholds, f"threshold={float(threshold)!r}", 1)
    text = re.sub(r"(?m)^tree_sizes=.*\n", "", text)
    source = tmp_path / "edited.txt"
    source.write_text(text)
    # Proof rows that hold the value: the reference is the training data.
    with pytest.raises(ImportRefused) as refused:
        import_model(options(tmp_path / "models", source, "edited", data), None, WARNINGS.append)
    message = str(refused.value)
    assert f"likely cause: float32 split thresholds: {FEATURES[feature]!r} = " in message, message
    assert "--round-thresholds" in message
    fixed = import_model(
        options(tmp_path / "models", source, "edited", data, round_thresholds=True), None, WARNINGS.append
    )
    assert fixed.proof.equal and fixed.model.card.ref == "edited@1"


def test_user_mistakes_are_one_line_and_exit_2(
    data: dict[str, object], tmp_path: Path, streamer_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    x, y = data["x"], data["y"]
    models = tmp_path / "models"
    models.mkdir()
    pickled = save("logreg", train("logreg", x, y), tmp_path, pickle=True)  # type: ignore[arg-type]
    (tmp_path / "notes.md").write_text("# not a model\n")
    env = {"STREAMER_MODELS_DIR": str(models)}
    common = ["--reference", str(data["reference"])]
    one_line_refusal(
        streamer_cli(["models", "import", "missing.skops", "--name", "m"], tmp_path, **env), "no such file"
    )
    one_line_refusal(
        streamer_cli(["models", "import", "notes.md", "--name", "m"], tmp_path, **env), "cannot tell what kind of model"
    )
    one_line_refusal(  # the real command, once: its exit code and its stderr as a shell sees them
        run(["models", "import", str(pickled), "--name", "m", *common], tmp_path, **env),
        "is a pickle",
        "--trust-pickle",
    )
    five = ",".join(FEATURES[:5])
    one_line_refusal(
        streamer_cli(
            ["models", "import", str(pickled), "--name", "m", "--trust-pickle", "--features", five, *common],
            tmp_path,
            **env,
        ),
        "5 feature names were given, but the model takes 6 features",
    )
    booster = tmp_path / "booster.json"
    train("xgboost", x, y).save_model(str(booster))  # type: ignore[arg-type]
    ok = streamer_cli(["models", "import", str(booster), "--name", "m", *common], tmp_path, **env)
    assert ok.returncode == 0, ok.stderr
    from sklearn.linear_model import LinearRegression

    regressor = save("linear", LinearRegression().fit(x, x[:, 0]), tmp_path)  # type: ignore[index, arg-type]
    one_line_refusal(
        streamer_cli(
            ["models", "import", str(regressor), "--name", "m", "--features", ",".join(FEATURES), *common],
            tmp_path,
            **env,
        ),
        "name clash",
        "--name",
    )
    assert sorted(p.name for p in (models / "m").iterdir()) == ["1"]


def test_an_mlflow_model_is_imported_by_alias_with_its_signature(
    data: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store for local use
    import mlflow
    import mlflow.artifacts
    import mlflow.sklearn
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    x, y = data["x"], data["y"]
    model = train("forest", x, y)  # type: ignore[arg-type]
    signature = ModelSignature(inputs=Schema([ColSpec("double", name) for name in FEATURES]))
    with mlflow.start_run() as run_info:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            registered_model_name="fraud-gbm",
            skops_trusted_types=["sklearn.tree._tree.Tree"],  # MLflow makes its author declare them
        )
    mlflow.MlflowClient().set_registered_model_alias("fraud-gbm", "champion", 1)
    result = import_model(options(tmp_path / "models", "models:/fraud-gbm@champion", "fraud-gbm", data), None, print)
    assert result.model.card.features == FEATURES  # from the signature: the model was fitted on a bare array
    assert "MLflow sklearn flavor" in result.source
    served = served_probability(result.path, data["holdout"])  # type: ignore[arg-type]
    np.testing.assert_allclose(served, positive_probability("forest", model, data["hold_x"]), atol=1e-5, rtol=0)  # type: ignore[arg-type]
    by_run = import_model(
        options(tmp_path / "models", f"runs:/{run_info.info.run_id}/model", "fraud-gbm", data), 1, print
    )
    assert by_run.model.card.ref == "fraud-gbm@2" and by_run.champion == 1
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/fraud-gbm/1", dst_path=str(tmp_path / "dl"))
    from_directory = import_model(options(tmp_path / "models", local, "fraud-gbm", data), 2, print)
    assert from_directory.model.card.ref == "fraud-gbm@3" and from_directory.model.card.features == FEATURES


def read_events(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[dict[str, object]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "import-events", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(events) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                events.append(json.loads(message.value()))
    finally:
        consumer.close()
    return events


def test_the_holdout_gate_refuses_a_worse_version_force_publishes_it_and_each_deploy_is_applied(
    data: dict[str, object],
    tmp_path: Path,
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    unique_name: Callable[[str], str],
    streamer_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    x, y = data["x"], data["y"]
    models = tmp_path / "models"
    models.mkdir()
    events = unique_name("events")
    KafkaAdmin(kafka_broker.address).create_topics([events], 1)
    prefix = unique_name("import")
    (tmp_path / "streamer.toml").write_text(f'[redis]\nkey_prefix = "{prefix}"\n[rollout.fraud]\nenabled = true\n')
    env = {
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_MODEL_EVENTS_TOPIC": events,
    }
    gate = ["--holdout", str(data["holdout"]), "--label-column", LABEL]
    good = tmp_path / "good.json"
    train("xgboost", x, y).save_model(str(good))  # type: ignore[arg-type]
    first = run(["models", "import", str(good), "--name", "fraud", *gate], tmp_path, **env)
    assert first.returncode == 0, first.stderr
    # Worse: a forest of two stumps, trained on a tenth of the rows.
    from sklearn.ensemble import RandomForestClassifier

    weak = RandomForestClassifier(n_estimators=2, max_depth=1, random_state=0).fit(x[:160], y[:160])  # type: ignore[index]
    worse = save("forest", weak, tmp_path / "worse")
    gate += ["--trust-pickle", "--features", ",".join(FEATURES)]  # skops: a forest's trees need trusting
    refusal = one_line_refusal(
        streamer_cli(["models", "import", str(worse), "--name", "fraud", *gate], tmp_path, **env),
        "fraud@2 not published: worse than the champion fraud@1 on the holdout",
        "auc",
        "--force",
    )
    assert "worse by" in refusal and not (models / "fraud" / "2").exists()
    forced = run(
        ["models", "import", str(worse), "--name", "fraud", *gate, "--force", "--canary", "0.1", "--json"],
        tmp_path,
        **env,
    )
    assert forced.returncode == 0, forced.stderr
    card = model_repository.load_version(models / "fraud" / "2").card
    assert card.card["champion"]["version"] == 1 and card.card["champion"]["forced"] is True
    assert card.card["metrics"]["auc"] < card.card["champion"]["auc"] - 0.01
    state = ControlChannel(redis.Redis.from_url(redis_server.address), prefix).state("fraud")
    assert state.pin == 1 and state.canary == ((2, 0.1),)
    kinds = [(e["type"], e["version"]) for e in read_events(kafka_broker.address, events, 4)]
    assert kinds == [("model-imported", "1"), ("model-pinned", "1"), ("model-imported", "2"), ("model-canary", "2")]
    imported = read_events(kafka_broker.address, events, 3)[2]
    assert imported["by"] == "command" and imported["deploy"] == "canary" and imported["champion"] == 1
    assert imported["gate"]["forced"] is True and imported["gate"]["metric"] == "auc"  # type: ignore[index]
    assert imported["metrics"]["auc"] == card.card["metrics"]["auc"]  # type: ignore[index]
    holdout = ["--holdout", str(data["holdout"]), "--label-column", LABEL]
    validated = streamer_cli(["models", "validate", str(models / "fraud" / "2"), *holdout], tmp_path, **env)
    assert validated.returncode == 0 and f"{card.card['metrics']['auc']:.4f}" in validated.stdout
    # The other two deploys: a shadow, then the label-driven rollout of [rollout.fraud] (its stage: shadow).
    channel = ControlChannel(redis.Redis.from_url(redis_server.address), prefix)
    shadowed = streamer_cli(["models", "import", str(good), "--name", "fraud", *holdout, "--shadow"], tmp_path, **env)
    assert shadowed.returncode == 0, shadowed.stderr
    state = channel.state("fraud")
    assert (state.pin, state.canary, state.shadow) == (1, (), 3)
    rolled = streamer_cli(["models", "import", str(good), "--name", "fraud", *holdout, "--rollout"], tmp_path, **env)
    assert rolled.returncode == 0, rolled.stderr
    state = channel.state("fraud")
    assert (state.pin, state.candidate) == (1, 4) and "new version 4 on trial" in state.reason
    kinds = [(e["type"], e["version"]) for e in read_events(kafka_broker.address, events, 8)][4:]
    assert kinds == [("model-imported", "3"), ("model-shadow", "3"), ("model-imported", "4"), ("rollout-started", "4")]
