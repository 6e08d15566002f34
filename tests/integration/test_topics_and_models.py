"""`streamer topics create` and the model repository against real files and the real broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamer.adapters import devstack, model_repository, onnx_models
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.core.errors import ModelError
from tests.conftest import REPO

STREAMER = [sys.executable, "-m", "streamer.cli"]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | env
    return subprocess.run(STREAMER + args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def test_topics_create_is_idempotent_and_honours_names(
    kafka_broker: devstack.ServerInfo, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = {
        v: unique_name(v.lower()) for v in ("REQUESTS", "PREDICTIONS", "FEEDBACK", "DLQ", "MODEL_EVENTS", "SHADOW")
    }
    env = {f"STREAMER_{k}_TOPIC": v for k, v in names.items()} | {"STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address}
    first = run(["topics", "create", "--partitions", "3"], tmp_path, **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 6
    second = run(["topics", "create", "--partitions", "3"], tmp_path, **env)
    assert second.returncode == 0 and second.stdout.count("exists") == 6
    assert KafkaAdmin(kafka_broker.address).partition_counts(names.values()) == dict.fromkeys(names.values(), 3)


def test_topics_create_reports_a_partition_mismatch(
    kafka_broker: devstack.ServerInfo,
    topic_factory: Callable[..., str],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    existing = topic_factory("req", partitions=2)
    env = {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_REQUESTS_TOPIC": existing,
        "STREAMER_PREDICTIONS_TOPIC": unique_name("p"),
        "STREAMER_FEEDBACK_TOPIC": unique_name("f"),
        "STREAMER_DLQ_TOPIC": unique_name("d"),
    }
    result = run(["topics", "create", "--partitions", "4"], tmp_path, **env)
    assert result.returncode == 2
    assert "exists with 2, expected 4" in result.stdout
    assert "partition counts differ from 4" in result.stderr and "Traceback" not in result.stderr
    assert f"`streamer topics delete {existing} --yes`" in result.stderr


ONLINE_MODEL = REPO / "examples" / "models" / "fraud-online" / "1"


def copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "models" / "fraud" / "1"
    shutil.copytree(REPO / "models" / "fraud" / "1", target)
    return target


def test_the_shipped_model_loads_and_matches_its_card() -> None:
    model = model_repository.load_version(REPO / "models" / "fraud" / "1")
    assert model.card.ref == "fraud@1"
    assert model.output_names == ("label", "probabilities")
    x = np.zeros((4, len(model.card.features)), dtype=np.float32)
    label, probabilities = model.session.run(None, {model.card.input: x})
    assert label.shape == (4,) and probabilities.shape == (4, 2)
    assert {"description", "intended_use", "training_data", "limitations", "metrics"} <= set(model.card.card)
    assert 0.5 < model.card.card["metrics"]["auc"] <= 1.0


def test_a_corrupt_model_is_refused_in_one_line_naming_the_file(tmp_path: Path) -> None:
    version = copy_model(tmp_path)
    (version / "model.onnx").write_bytes(b"this is not onnx")
    result = run(["models", "validate", str(version)], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(version / "model.onnx") in lines[0] and "sha256" in lines[0]
    # with the checksum updated, ONNX Runtime itself has to refuse the bytes
    card = (version / "card.toml").read_text()
    digest = onnx_models.sha256_of(version / "model.onnx")
    (version / "card.toml").write_text(
        "\n".join(f'sha256 = "{digest}"' if line.startswith("sha256") else line for line in card.splitlines())
    )
    with pytest.raises(ModelError, match="not a loadable ONNX model") as raised:
        model_repository.load_version(version)
    assert str(version / "model.onnx") in str(raised.value)
    result = run(["models", "validate", str(version)], tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not a loadable ONNX model" in result.stderr


def test_models_list_shows_served_and_refused_versions(tmp_path: Path) -> None:
    copy_model(tmp_path)
    broken = tmp_path / "models" / "fraud" / "2"
    shutil.copytree(tmp_path / "models" / "fraud" / "1", broken)
    (broken / "card.toml").write_text((broken / "card.toml").read_text().replace("version = 1", "version = 2"))
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes()[:-10])
    result = run(["models", "list", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["name"], str(r["version"]), r["status"]) for r in rows] == [
        ("fraud", "1", "serving"),
        ("fraud", "2", "refused"),
    ]
    assert "sha256" in rows[1]["error"]
    table = run(["models", "list"], tmp_path)
    assert "serving" in table.stdout and "refused" in table.stdout


def test_a_card_that_disagrees_with_the_graph_is_refused(tmp_path: Path) -> None:
    version = copy_model(tmp_path)
    card = (version / "card.toml").read_text().replace('input = "float_input"', 'input = "wrong"')
    (version / "card.toml").write_text(card)
    with pytest.raises(ModelError, match="card input 'wrong' is not an input of the graph"):
        model_repository.load_version(version)


def test_the_demo_model_is_reproducible_from_its_script(tmp_path: Path) -> None:
    # A hash seed of its own: the bytes must not depend on Python's set/dict iteration order.
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train_fraud_model.py"),
            "--out",
            str(tmp_path / "fraud" / "1"),
            "--online-out",
            str(tmp_path / "fraud-online" / "1"),
            "--forest-out",
            str(tmp_path / "fraud-forest" / "1"),
        ],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    shipped = (
        (REPO / "models" / "fraud" / "1", "fraud"),
        (ONLINE_MODEL, "fraud-online"),
        (REPO / "examples" / "models" / "fraud-forest" / "1", "fraud-forest"),
    )
    for shipped_dir, name in shipped:
        assert (tmp_path / name / "1" / "card.toml").read_text() == (shipped_dir / "card.toml").read_text()
        assert (tmp_path / name / "1" / "model.onnx").read_bytes() == (shipped_dir / "model.onnx").read_bytes()


def test_a_score_reference_that_serving_cannot_read_is_refused_at_validation(tmp_path: Path) -> None:
    """A multiclass-style ``score = "probabilities"`` (two columns) passed the signature check and then made
    every request a scoring-failed dead letter: the warm-up reads score as serving does, so it is refused."""
    version = copy_model(tmp_path)
    card = (version / "card.toml").read_text().replace('score = "probabilities[:,1]"', 'score = "probabilities"')
    (version / "card.toml").write_text(card)
    result = run(["models", "validate", str(version)], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "warm-up on sample rows failed" in result.stderr and "name a column" in result.stderr
