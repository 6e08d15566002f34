"""``streamer models import``: from a trained model to the next version of NAME in the model repository.

The steps, in order; any refusal stops the import before step 8, with one line naming the cause, and leaves
the model repository untouched:

1. the version: the next of NAME (or ``--version``, refused if taken); a NAME whose versions have another task
   is a name clash;
2. the source is read (``sources.open_source``; a pickle only with ``--trust-pickle``);
3. the feature names: the model's own or its MLflow signature's, else ``--features``; both given, they must
   agree, and their count must be the model's;
4. the conversion to ONNX and its serving form (``onnx_graph.serving_form``: no ZipMap, ``score``/``label``
   found, a multiclass model's predicted-class probability);
5. the card is written (``card_writer``) and the version is loaded from a scratch directory by the worker's own
   validation (``model_repository.load_version``: checksum, card against graph, warm-up);
6. the proof: source and converted model score the same rows (``measure.prove``); refused unless equal within
   the tolerance of ``core.conversion_proof``;
7. with ``--holdout FILE --label-column COL``, the holdout metrics of the new version and of the champion on the
   same rows; refused when worse than the champion by more than ``--max-regression`` in the gate metric, unless
   ``--force``;
8. ``before_publish`` (the caller's hook: holding the champion before a deploy), then the card with the figures
   is published atomically (``onnx_models.publish_version``): hot reload serves it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streamer.adapters import model_repository
from streamer.adapters.onnx_models import CARD_FILE, MODEL_FILE, LoadedModel, next_version, publish_version
from streamer.core.conversion_proof import Proof
from streamer.core.errors import ImportRefused, ModelError
from streamer.core.holdout import GateVerdict, HoldoutMetrics, default_metric, gate, gate_problem
from streamer.model_import import measure
from streamer.model_import.card_writer import CardSpec, card_text, reference_table
from streamer.model_import.data import Table, read_table, rows_for
from streamer.model_import.onnx_graph import OnnxSource, outputs_of, serving_form
from streamer.model_import.source_model import SourceModel
from streamer.model_import.sources import open_source

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROSE = ("description", "intended_use", "training_data", "limitations")
MEASURED = ("source", "converted_with", "equality", "metrics", "metrics_data", "champion")


@dataclass(frozen=True, slots=True)
class ImportOptions:
    source: str
    name: str
    models_dir: Path
    trust_pickle: bool = False
    features: tuple[str, ...] | None = None
    reference: Path | None = None
    sample: int = 1000
    holdout: Path | None = None
    label_column: str | None = None
    metric: str | None = None
    max_regression: float = 0.01
    force: bool = False
    threshold: float = 0.5
    allow_missing: bool = False
    version: int | None = None
    round_thresholds: bool = False  # LightGBM: convert with float64 split thresholds rounded down to float32
    card: Mapping[str, Any] = field(default_factory=dict)  # the [card] prose (and any free-form keys)


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: Path
    model: LoadedModel
    source: str
    converter: str
    proof: Proof
    proof_data: str
    metrics: HoldoutMetrics | None = None
    champion: int | None = None
    champion_metrics: HoldoutMetrics | None = None
    verdict: GateVerdict | None = None
    forced: bool = False
    seconds: float = 0.0

    def event_fields(self) -> dict[str, Any]:
        """The figures of a ``model-imported`` event."""
        fields: dict[str, Any] = {
            "source": self.source,
            "converter": self.converter,
            "equality": self.proof.figures(),
            "equality_data": self.proof_data,
        }
        if self.metrics is not None:
            fields["metrics"] = self.metrics.figures()
        if self.champion is not None:
            fields["champion"] = self.champion
        if self.champion_metrics is not None:
            fields["champion_metrics"] = self.champion_metrics.figures()
        if self.verdict is not None:
            fields["gate"] = {
                "metric": self.verdict.metric,
                "worse_by": round(self.verdict.worse_by, 6),
                "max_regression": self.verdict.max_regression,
                "passed": self.verdict.passed,
                "forced": self.forced,
            }
        return fields


def _check_options(options: ImportOptions, existing: list[int]) -> int:
    if not _NAME.match(options.name):
        raise ImportRefused(f"--name {options.name!r}: a model name is letters, digits, '.', '_' or '-'")
    if (options.holdout is None) != (options.label_column is None):
        raise ImportRefused("--holdout FILE and --label-column COL go together")
    if options.force and options.holdout is None:
        raise ImportRefused("--force overrides the holdout gate: it needs --holdout FILE --label-column COL")
    if not 0.0 <= options.threshold <= 1.0:
        raise ImportRefused(f"--threshold must be in [0, 1], got {options.threshold}")
    if options.version is None:
        return next_version(options.models_dir, options.name)
    if options.version < 1 or options.version in existing:
        taken = "exists" if options.version in existing else "is not a positive integer"
        raise ImportRefused(
            f"{options.name}@{options.version} {taken}: leave --version out to take "
            f"{next_version(options.models_dir, options.name)}"
        )
    return options.version


def feature_names(given: tuple[str, ...] | None, source: SourceModel) -> tuple[str, ...]:
    """The input's column names: the model's (or its signature's), else ``--features``; checked against each
    other and against the model's feature count."""
    own = source.feature_names
    if given and own and tuple(given) != tuple(own):
        same = set(given) == set(own)
        raise ImportRefused(
            f"--features lists {list(given)}, but the model was fitted on {list(own)}"
            + (" (the same names in another order: the model's order is its input's)" if same else "")
        )
    names = tuple(given or own or ())
    if not names:
        count = f"{source.n_features} " if source.n_features else ""
        raise ImportRefused(
            f"the model carries no feature names: give --features with its {count}input columns, in order"
        )
    if len(set(names)) != len(names):
        raise ImportRefused(f"the feature names repeat: {list(names)}")
    if source.n_features is not None and len(names) != source.n_features:
        raise ImportRefused(f"{len(names)} feature names were given, but the model takes {source.n_features} features")
    return names


def _stage(folder: Path, options: ImportOptions, version: int, data: bytes, spec: CardSpec) -> LoadedModel:
    """Write the version into a scratch repository and load it as a worker would."""
    target = folder / options.name / str(version)
    target.mkdir(parents=True, exist_ok=True)
    (target / MODEL_FILE).write_bytes(data)
    (target / CARD_FILE).write_text(card_text(spec))
    try:
        return model_repository.load_version(target)
    except ModelError as exc:
        raise ImportRefused(f"the converted model fails the worker's checks: {exc.detail}") from None


def _champion_model(options: ImportOptions, champion: int | None, warn: Callable[[str], None]) -> LoadedModel | None:
    if champion is None:
        return None
    try:
        return model_repository.load_version(options.models_dir / options.name / str(champion))
    except ModelError as exc:
        warn(f"the champion {options.name}@{champion} does not load ({exc}): nothing to compare with")
        return None


def import_model(
    options: ImportOptions,
    champion: int | None,
    warn: Callable[[str], None],
    before_publish: Callable[[int], None] = lambda version: None,
) -> ImportResult:
    """Steps 1-8 of the module docstring; ``champion`` is the version serving NAME now (None: a new NAME)."""
    started = time.perf_counter()
    existing = [int(p.name) for p in model_repository.version_dirs(options.models_dir) if p.parent.name == options.name]
    version = _check_options(options, existing)
    holdout = read_table(options.holdout, "--holdout") if options.holdout is not None else None
    reference = read_table(options.reference, "--reference") if options.reference is not None else None
    with tempfile.TemporaryDirectory(prefix="streamer-import-") as scratch:
        source = open_source(options.source, options.trust_pickle, warn, Path(scratch) / "download")
        names = feature_names(options.features, source)
        if options.round_thresholds:
            if not hasattr(source, "round_thresholds"):
                raise ImportRefused(
                    "--round-thresholds is for LightGBM models (skl2onnx rounds scikit-learn's thresholds itself, "
                    "XGBoost's are float32 already)"
                )
            source.round_thresholds = True
        if holdout is None and reference is None and not isinstance(source, OnnxSource):
            raise ImportRefused(
                "nothing to prove the conversion on: give --holdout FILE --label-column COL or --reference FILE"
            )
        if isinstance(source, OnnxSource):
            source.describe_outputs(len(names))
        data = serving_form(source.to_onnx(len(names)), len(names))
        outputs = outputs_of(data, len(names))
        if outputs.task != source.task:
            raise ImportRefused(f"the converted model reads as a {outputs.task}, but the source is a {source.task}")
        if options.holdout is not None:
            problem = gate_problem(outputs.task, options.metric or default_metric(outputs.task))
            if problem:
                raise ImportRefused(f"--metric: {problem}")
        current = _champion_model(options, champion, warn)
        if current is not None and current.card.task != outputs.task:
            raise ImportRefused(
                f"name clash: {current.card.ref} is a {current.card.task} model and this one a {outputs.task}: "
                "import it under another --name"
            )
        spec = CardSpec(
            name=options.name,
            version=version,
            task=outputs.task,
            features=names,
            input=outputs.input,
            sha256=hashlib.sha256(data).hexdigest(),
            score=outputs.score,
            label=outputs.label,
            threshold=options.threshold,
            allow_missing=options.allow_missing,
        )
        folder = Path(scratch) / "models"
        model = _stage(folder, options, version, data, spec)
        if reference is not None:
            spec = replace(
                spec, reference=reference_table(names, rows_for(model.card, reference, what="--reference").matrix)
            )
        rows = measure.proof_rows(model, holdout, reference, options.sample)
        proof = measure.prove(source, model, outputs, rows)
        if not proof.equal:
            hint = ""
            thresholds = (proof.cause or "").startswith("float32 split thresholds")
            if thresholds and hasattr(source, "round_thresholds") and not options.round_thresholds:
                hint = (
                    "; --round-thresholds converts the thresholds rounded down to float32, keeping every input's side"
                )
            raise ImportRefused(
                f"{options.name}@{version} not published: the converted model does not answer like the source "
                f"({source.description}): {proof.describe(rows.names, source.classes)}{hint}"
            )
        result = ImportResult(
            folder, model, source.description, f"{source.converter}; {source.library}", proof, rows.described
        )
        if holdout is not None and options.label_column is not None:
            result = _gate(options, version, model, current, holdout, result)
        card = _card_table(options, result, holdout)
        _stage(folder, options, version, data, replace(spec, card=card))
        before_publish(version)
        try:
            path = publish_version(options.models_dir, options.name, version, data, card_text(replace(spec, card=card)))
        except FileExistsError:
            raise ImportRefused(f"{options.name}@{version} appeared while importing: run the import again") from None
    published = model_repository.load_version(path)  # what the workers will load, read back
    return replace(result, path=path, model=published, seconds=time.perf_counter() - started)


def _gate(
    options: ImportOptions,
    version: int,
    model: LoadedModel,
    current: LoadedModel | None,
    holdout: Table,
    result: ImportResult,
) -> ImportResult:
    assert options.label_column is not None
    if current is None:
        measured = measure.holdout_metrics(model, holdout, options.label_column)
        return replace(result, metrics=measured.metrics)
    mine, theirs = measure.compare(model, current, holdout, options.label_column)
    metric = options.metric or default_metric(model.card.task)
    try:
        verdict = gate(mine.metrics, theirs.metrics, metric, options.max_regression)
    except ValueError as exc:
        raise ImportRefused(f"the holdout gate cannot compare: {exc}") from None
    if not verdict.passed and not options.force:
        raise ImportRefused(
            f"{options.name}@{version} not published: worse than the champion {current.card.ref} on the holdout "
            f"({mine.metrics.rows} rows): {verdict.describe()}; --force publishes it anyway"
        )
    return replace(
        result,
        metrics=mine.metrics,
        champion=current.card.version,
        champion_metrics=theirs.metrics,
        verdict=verdict,
        forced=not verdict.passed,
    )


def _card_table(options: ImportOptions, result: ImportResult, holdout: Table | None) -> dict[str, Any]:
    """``[card]``: the prose given (file, then flags), then what the import measured (never overridden)."""
    card: dict[str, Any] = {k: v for k, v in options.card.items() if k not in MEASURED and v is not None}
    card.setdefault("description", f"{result.source}, imported by streamer models import")
    ordered = {k: card.pop(k) for k in PROSE if k in card} | card
    ordered["source"] = result.source
    ordered["converted_with"] = result.converter
    ordered["equality"] = {**result.proof.figures(), "data": result.proof_data}
    if result.metrics is not None and holdout is not None:
        ordered["metrics"] = {**result.metrics.figures(), "rows": result.metrics.rows}
        ordered["metrics_data"] = f"holdout {holdout.path.name}, label column {options.label_column}"
    if result.champion is not None and result.champion_metrics is not None and result.verdict is not None:
        ordered["champion"] = {
            "version": result.champion,
            **result.champion_metrics.figures(),
            "gate": result.verdict.metric,
            "worse_by": round(result.verdict.worse_by, 6),
            "forced": result.forced,
        }
    return ordered
