"""Model versions for lifecycle tests: real ONNX files of the repository under new names and versions."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from tests.conftest import REPO

GBDT = REPO / "models" / "fraud" / "1"
LOGISTIC = REPO / "examples" / "models" / "fraud-online" / "1"


def card_text(
    source: Path, name: str, version: int, model: bytes, online: bool = False, threshold: float | None = None
) -> str:
    text = (source / "card.toml").read_text()
    if threshold is not None:
        text = re.sub(r"(?m)^threshold = .*$", f"threshold = {threshold}", text, count=1)
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1)
    text = re.sub(r"(?m)^version = \d+$", f"version = {version}", text, count=1)
    text = re.sub(r'(?m)^sha256 = "[0-9a-f]+"$', f'sha256 = "{hashlib.sha256(model).hexdigest()}"', text, count=1)
    if not online:
        text = re.sub(r"(?ms)^\[online\]\n.*?(?=^\[|\Z)", "", text)
    return text


def write_version(
    models_dir: Path,
    name: str,
    version: int,
    source: Path = GBDT,
    *,
    model: bytes | None = None,
    sha_of: bytes | None = None,
    threshold: float | None = None,
) -> Path:
    """Write ``name/version`` the way an operator should: into a hidden directory, then renamed into place.

    ``model`` replaces the ONNX bytes (a corrupt file); ``sha_of`` makes the card's checksum that of other bytes.
    """
    data = (source / "model.onnx").read_bytes() if model is None else model
    staging = models_dir / name / f".{version}.tmp"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(data)
    (staging / "card.toml").write_text(
        card_text(source, name, version, data if sha_of is None else sha_of, threshold=threshold)
    )
    target = models_dir / name / str(version)
    os.rename(staging, target)
    return target


def remove_version(models_dir: Path, name: str, version: int) -> None:
    shutil.rmtree(models_dir / name / str(version))


def inverted_logistic() -> bytes:
    """The shipped logistic model with its coefficients and bias negated: a deliberately bad challenger."""
    from dataclasses import replace

    from streamer.adapters import model_repository
    from streamer.adapters.onnx_logistic import build_logistic, read_logistic_file

    card = model_repository.load_version(LOGISTIC).card
    weights = read_logistic_file(str(LOGISTIC / "model.onnx"))
    return build_logistic(card, replace(weights, coef=-weights.coef, bias=-weights.bias))
