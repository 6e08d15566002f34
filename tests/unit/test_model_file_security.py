"""Model files are untrusted input: hashed before ONNX Runtime parses them, confined to the repository, never
unpickled."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from streamer.adapters import model_repository
from streamer.core.errors import ModelError
from tests.conftest import REPO


def copy_fraud(models: Path) -> Path:
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    return models / "fraud" / "1"


def test_a_file_that_does_not_match_the_cards_sha256_never_reaches_onnx_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = copy_fraud(tmp_path / "models")
    # Bytes a parser might choke on (a protobuf claiming a huge length): they must not be parsed at all.
    (version / "model.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 64)

    def explode(*_: object, **__: object) -> None:
        raise AssertionError("ONNX Runtime was given a file whose sha256 does not match its card")

    monkeypatch.setattr(model_repository.ort, "InferenceSession", explode)
    with pytest.raises(ModelError, match=r"sha256 is .* refusing to load"):
        model_repository.load_version(version)


def test_a_version_directory_linked_from_outside_the_repository_is_refused(tmp_path: Path) -> None:
    outside = copy_fraud(tmp_path / "elsewhere")
    models = tmp_path / "repo" / "models"
    (models / "fraud").mkdir(parents=True)
    (models / "fraud" / "1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelError, match="outside the model repository"):
        model_repository.load_version(models / "fraud" / "1")
    assert list(model_repository.scan(models).refused) == [models / "fraud" / "1"]


def test_a_model_file_linked_from_outside_is_refused_before_it_is_read(tmp_path: Path) -> None:
    version = copy_fraud(tmp_path / "models")
    secret = tmp_path / "secret.bin"
    shutil.move(version / "model.onnx", secret)
    (version / "model.onnx").symlink_to(secret)
    with pytest.raises(ModelError, match="outside the model repository"):
        model_repository.load_version(version)


def test_a_link_inside_the_same_git_repository_is_allowed(tmp_path: Path) -> None:
    # Like examples/models/fraud -> ../../models/fraud in this repository.
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    copy_fraud(repo / "models")
    (repo / "examples" / "models").mkdir(parents=True)
    (repo / "examples" / "models" / "fraud").symlink_to(Path("../../models/fraud"), target_is_directory=True)
    model = model_repository.load_version(repo / "examples" / "models" / "fraud" / "1")
    assert model.card.ref == "fraud@1"


def test_the_repositorys_own_example_link_still_loads() -> None:
    result = model_repository.scan(REPO / "examples" / "models")
    assert 1 in result.loaded.get("fraud", {}), result.refused


def test_nothing_in_streamer_unpickles_but_the_trusted_import() -> None:
    """One module may load a pickle: ``streamer models import --trust-pickle``'s loader, which converts it to ONNX.
    What a worker imports never includes it (tests/unit/test_worker_imports.py)."""
    pattern = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|joblib|dill|cloudpickle)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "streamer").rglob("*.py")
        if pattern.search(path.read_text()) or "pickle.load" in path.read_text()
    ]
    assert offenders == ["streamer/model_import/sklearn_source.py"]
    loader = (REPO / "streamer" / "model_import" / "model_files.py").read_text()
    assert "if not trust_pickle:\n        raise ImportRefused(" in loader  # the only way to the loader
