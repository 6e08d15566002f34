"""A model version as loaded: its files' names, its ONNX Runtime session, how sessions are opened, and how a
new version is published.

The lowest layer of the model adapters: the repository (``model_repository``), online models (``online``),
the scorer (``onnx_scorer``) and the model import (``streamer.model_import``) all build on it, and it imports
none of them.

Publishing (``publish_version``) is the one way streamer writes a version: both files into a hidden
``<name>/.<version>.tmp`` directory, flushed, then one ``rename`` to ``<name>/<version>``. A worker's hot reload
therefore never sees a half-written version, and a version number taken meanwhile by someone else makes the
rename fail instead of mixing two versions' files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from streamer.core.cards import ModelCard

CARD_FILE = "card.toml"
MODEL_FILE = "model.onnx"


@dataclass(slots=True)
class LoadedModel:
    """A model version ready to serve: its card, its file and an ONNX Runtime session (warmed up)."""

    card: ModelCard
    path: Path
    session: ort.InferenceSession
    output_names: tuple[str, ...]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def session_options(intra_op_num_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not actionable for operators
    return options


def next_version(models_dir: Path, name: str) -> int:
    """One more than the highest version of ``name`` on disk (1 for a new name)."""
    folder = models_dir / name
    versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(versions, default=0) + 1


def publish_version(models_dir: Path, name: str, version: int, model: bytes, card_text: str) -> Path:
    """Write ``<models_dir>/<name>/<version>`` atomically (hidden directory, then rename) and return it.

    Raises ``FileExistsError`` when that version exists (or appears while writing), leaving nothing behind.
    """
    target = models_dir / name / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists")
    staging = models_dir / name / f".{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)  # a crashed earlier attempt's leftovers
    staging.mkdir(parents=True)
    try:
        for file_name, data in ((MODEL_FILE, model), (CARD_FILE, card_text.encode())):
            with open(staging / file_name, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        if target.exists():
            raise FileExistsError(f"{target} exists")
        os.rename(staging, target)  # atomic; fails on a non-empty directory of that name
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
