"""A model version as loaded: its files' names, its ONNX Runtime session and how sessions are opened.

The lowest layer of the model adapters: the repository (``model_repository``), online models (``online``) and
the scorer (``onnx_scorer``) all build on it, and it imports none of them.
"""

from __future__ import annotations

import hashlib
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
