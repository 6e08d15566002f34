"""``models/`` on disk (contract section 6): versions, checksums, cards checked against their ONNX graphs.

Layout: ``<dir>/<name>/<version>/model.onnx`` and ``card.toml`` beside it; versions are positive integers.
``load_version`` refuses a version whose card is invalid, whose ``model.onnx`` does not hash to the card's
``sha256``, is not a loadable ONNX model, or whose graph disagrees with the card, with a one-line
``ModelError`` naming the file. ``scan`` loads every version it finds and keeps the refusals beside the
loaded ones, so that one broken version never stops the others from serving.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.adapters.online import check_online
from streamer.adapters.onnx_calibration import check_calibration
from streamer.adapters.onnx_models import CARD_FILE, MODEL_FILE, LoadedModel, session_options, sha256_of
from streamer.core.cards import GraphSignature, ModelCard, TensorInfo, check_signature, parse_card
from streamer.core.errors import ModelError, ScoringError
from streamer.core.graph.scoring_graph import GraphResult, ScoringGraph

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ScanResult:
    loaded: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    refused: dict[Path, ModelError] = field(default_factory=dict)

    def cards(self) -> list[ModelCard]:
        return [m.card for versions in self.loaded.values() for m in versions.values()]


def _tensor_info(node: ort.NodeArg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in (node.shape or ()))
    element_type = node.type.removeprefix("tensor(").removesuffix(")")  # "tensor(float)" -> "float"
    return TensorInfo(node.name, shape, element_type)


def allowed_roots(models_dir: Path) -> list[Path]:
    """Where the files of a models directory may really live (symlinks resolved).

    The rule: under the models directory itself, or inside the git work tree that holds it (the nearest parent
    with a ``.git``). A repository may link a model from elsewhere in itself (``examples/models/fraud`` is
    ``../../models/fraud``); a container's ``/app/models`` has no git tree, so there only the directory counts.
    Anything else (a link to ``/etc``, to a home directory, to another checkout) is refused: whoever may write
    a symlink into ``models/`` must not make the worker read files from anywhere.
    """
    resolved = models_dir.resolve()
    roots = [resolved]
    for parent in (resolved, *resolved.parents):
        if (parent / ".git").exists():
            roots.append(parent)
            break
    return roots


def check_confined(version_dir: Path) -> None:
    """Raise ``ModelError`` if the version directory, its card or its model file resolves outside the
    repository's ``allowed_roots`` (the models directory is the version's grandparent)."""
    roots = allowed_roots(version_dir.parent.parent)
    for path in (version_dir, version_dir / CARD_FILE, version_dir / MODEL_FILE):
        real = path.resolve()
        if not any(real.is_relative_to(root) for root in roots):
            raise ModelError(str(path), f"resolves to {real}, outside the model repository: refusing to load")


def load_version(version_dir: Path, intra_op_num_threads: int = 1) -> LoadedModel:
    """Load and validate one ``<name>/<version>`` directory, or raise ``ModelError`` naming the file.

    Order matters: the paths are confined first, then the bytes are hashed and compared with the card, and
    only then does ONNX Runtime (a large C++ parser) see the file, so a tampered or swapped file never reaches
    it. Models are ONNX only: nothing a worker imports unpickles (the one pickle loader is `streamer models
    import --trust-pickle`, converting a pickled model to ONNX before it ever reaches this function).
    """
    card_path = version_dir / CARD_FILE
    model_path = version_dir / MODEL_FILE
    check_confined(version_dir)
    try:
        table = tomllib.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelError(str(card_path), "missing model card") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(str(card_path), f"unreadable model card: {exc}") from None
    card = parse_card(table, str(card_path))
    if version_dir.name != str(card.version) or version_dir.parent.name != card.name:
        raise ModelError(
            str(card_path),
            f"card says {card.name}@{card.version} but lives in {version_dir.parent.name}/{version_dir.name}",
        )
    try:
        actual = sha256_of(model_path)
    except FileNotFoundError:
        raise ModelError(str(model_path), "missing model file") from None
    if actual != card.sha256:
        raise ModelError(str(model_path), f"sha256 is {actual}, the card says {card.sha256}: refusing to load")
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=session_options(intra_op_num_threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ONNX Runtime raises several unrelated types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(str(model_path), f"not a loadable ONNX model: {first_line}") from None
    signature = GraphSignature(
        inputs=tuple(_tensor_info(n) for n in session.get_inputs()),
        outputs=tuple(_tensor_info(n) for n in session.get_outputs()),
    )
    check_signature(card, signature, str(model_path))
    model = LoadedModel(card, model_path, session, tuple(t.name for t in signature.outputs))
    check_serving(model)
    if card.online is not None:
        check_online(model)
    if card.calibration is not None:
        check_calibration(model, sample_rows(card, 16))
    return model


def sample_rows(card: ModelCard, rows: int = 2) -> np.ndarray:
    """Rows a version is tried on before it serves: the middle of each feature's training range where the
    card has a ``[reference]``, else zeros (every card accepts zeros)."""
    row = [
        float(card.reference[f].edges[len(card.reference[f].edges) // 2])
        if f in card.reference and card.reference[f].edges
        else 0.0
        for f in card.features
    ]
    return np.tile(np.asarray(row, dtype=np.float32), (rows, 1))


def score_rows(model: LoadedModel, matrix: np.ndarray) -> GraphResult:
    """``score`` and ``label`` of a float32 feature matrix, read from the outputs exactly as serving reads them
    (the card's output references through ``ScoringGraph.single``); ``ScoringError`` when ONNX Runtime fails."""
    card = model.card

    def infer(_: ModelCard, rows: np.ndarray) -> dict[str, np.ndarray]:
        try:
            values = model.session.run(None, {card.input: rows})
        except Exception as exc:  # ONNX Runtime's own error types
            raise ScoringError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
        return {name: np.asarray(value) for name, value in zip(model.output_names, values, strict=True)}

    return ScoringGraph.single(card).run(matrix, infer)


def check_serving(model: LoadedModel) -> None:
    """Score sample rows and read ``score`` and ``label`` exactly as serving will, or raise ``ModelError``.

    Catches what the signature cannot: an output reference that does not select one value per row (a
    multiclass ``score = "probabilities"``), a graph that only takes batches of one, a non-finite score.
    """
    try:
        result = score_rows(model, sample_rows(model.card))
    except ScoringError as exc:
        raise ModelError(str(model.path), f"warm-up on sample rows failed: {exc.detail}") from None
    if not np.isfinite(result.score).all():
        raise ModelError(str(model.path), "warm-up on sample rows gave a non-finite score")


def version_dirs(models_dir: Path) -> list[Path]:
    """Every ``<name>/<int>`` directory, sorted by name then version."""
    found: list[Path] = []
    if not models_dir.is_dir():
        return found
    for name_dir in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [p for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
        found.extend(sorted(versions, key=lambda p: int(p.name)))
    return found


def scan(models_dir: Path, intra_op_num_threads: int = 1) -> ScanResult:
    """Load every version under ``models_dir``; refusals are logged and kept, never raised."""
    result = ScanResult()
    for version_dir in version_dirs(models_dir):
        try:
            model = load_version(version_dir, intra_op_num_threads)
        except ModelError as exc:
            log.error("refused model %s: %s", version_dir, exc)
            result.refused[version_dir] = exc
            continue
        result.loaded.setdefault(model.card.name, {})[model.card.version] = model
        log.info("loaded model %s from %s", model.card.ref, version_dir)
    return result
