"""``streamer models import SOURCE --name NAME``: convert, prove equal, validate against the champion, publish,
and deploy in the same step (``--canary W``, ``--shadow``, ``--rollout``); and the holdout figures of
``streamer models validate --holdout``.

The steps are ``model_import.importer``'s. What this module adds is the serving side: which version is the
champion now (``models_lifecycle.serving_champion``), the deploy through the control channel with the same
code path as ``streamer models canary | shadow`` (``models_lifecycle.change``), and the ``model-imported`` event
(``models_lifecycle.emit_event``). A deploy first holds the champion (a pin, unless one holds it already), so
that the new version, the highest on disk once published, never serves every key before its trial starts.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from streamer.cli import models_lifecycle
from streamer.cli.base import warning
from streamer.core import rollout
from streamer.core.errors import ConfigError, ImportRefused
from streamer.core.holdout import HoldoutMetrics


def _card_prose(card_file: Path | None, flags: dict[str, str | None]) -> dict[str, Any]:
    """The ``[card]`` prose: a TOML file's (top-level keys or a ``[card]`` table), then the flags."""
    table: dict[str, Any] = {}
    if card_file is not None:
        try:
            loaded = tomllib.loads(card_file.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ImportRefused(f"--card-file {card_file}: {exc}") from None
        table = dict(loaded.get("card", loaded))
    table.update({k: v for k, v in flags.items() if v is not None})
    return table


def metrics_table(rows: list[tuple[str, HoldoutMetrics]]) -> Table:
    names = [n for n in ("accuracy", "auc", "log_loss", "rmse", "mae") if any(n in m.figures() for _, m in rows)]
    table = Table("version", "rows", *names)
    for label, metrics in rows:
        figures = metrics.figures()
        table.add_row(Text(label), str(metrics.rows), *(f"{figures[n]:.4f}" if n in figures else "-" for n in names))
    return table


def print_holdout(model: Any, holdout: Path | None, label_column: str | None, out: Any) -> None:
    """``models validate --holdout``: the version's figures on the holdout, measured as ``models import`` does."""
    from streamer.model_import.data import read_table
    from streamer.model_import.measure import holdout_metrics

    if holdout is None or label_column is None:
        raise ConfigError("models validate: --holdout FILE and --label-column COL go together")
    measured = holdout_metrics(model, read_table(holdout, "--holdout"), label_column)
    out.print(metrics_table([(str(model.card.version), measured.metrics)]))
    if measured.rejected:
        out.print(Text(f"{measured.rejected} holdout rows left out: serving would reject them for {model.card.ref}"))


@dataclass(frozen=True, slots=True)
class Deploy:
    """``--canary W``, ``--shadow`` or ``--rollout``: checked before the import, the champion held before the
    publish, the trial started after it -- each a control-channel change (``models_lifecycle.change``)."""

    mode: str
    weight: float = 0.0

    @classmethod
    def of(cls, canary: float | None, shadow: bool, rollout_on: bool) -> Deploy | None:
        chosen = [m for m, on in (("canary", canary is not None), ("shadow", shadow), ("rollout", rollout_on)) if on]
        if len(chosen) > 1:
            raise ConfigError(f"models import: choose one of --canary, --shadow, --rollout (got {', '.join(chosen)})")
        if canary is not None and not 0 < canary < 1:
            raise ConfigError(f"models import: --canary must be in (0, 1), got {canary}")
        return cls(chosen[0], canary or 0.0) if chosen else None

    def check(self, s: Any, name: str, champion: int | None) -> None:
        s.require_redis_url()
        if champion is None:
            raise ConfigError(f"models import --{self.mode}: {name} has no version serving yet to try this one beside")
        policy = s.rollout.get(name)
        if self.mode == "rollout" and (policy is None or not policy.enabled):
            raise ConfigError(f"models import --rollout: set [rollout.{name}] enabled = true in the config first")

    def hold(self, s: Any, out: Any, name: str, champion: int, new: int) -> None:
        """Before publishing: pin the champion unless the control state pins it already."""
        state = models_lifecycle.channel_of(s).state(name)
        if state.generation and state.pin == champion:
            return
        reason = f"pinned {champion} while {name}@{new} is imported"
        models_lifecycle.change(
            s, out, name, "model-pinned", champion, lambda st, _: rollout.pinned(st, champion, reason)
        )

    def apply(self, s: Any, out: Any, name: str, new: int) -> None:
        """After publishing: start the trial of ``new`` beside the champion."""
        if self.mode == "rollout":
            policy = s.rollout[name]
            models_lifecycle.change(
                s, out, name, "rollout-started", new, lambda st, champ: rollout.start_candidate(st, champ, new, policy)
            )
            return
        weight, stage = self.weight, self.mode
        reason = f"{stage} {weight:g} on import" if stage == "canary" else "shadow on import"
        models_lifecycle.change(
            s, out, name, f"model-{stage}", new, lambda st, champ: rollout.trial(st, champ, new, stage, weight, reason)
        )


def report(out: Any, result: Any) -> None:
    """What the import did, for a person: the conversion, the proof, the metrics side by side, the gate."""
    card = result.model.card
    out.print(Text(f"converted {result.source} with {result.converter}"))
    proof = result.proof
    out.print(
        Text(
            f"proved equal on {result.proof_data}: max {proof.measure} difference {proof.max_difference:.3g} "
            f"(tolerance {proof.tolerance:g})"
        )
    )
    if result.metrics is not None:
        rows = [(f"{card.version} (new)", result.metrics)]
        if result.champion_metrics is not None:
            rows.append((f"{result.champion} (champion)", result.champion_metrics))
        out.print(metrics_table(rows))
    if result.verdict is not None:
        out.print(Text(("gate passed: " if result.verdict.passed else "gate FORCED: ") + result.verdict.describe()))
    out.print(Text(f"published {card.ref} at {result.path} in {result.seconds:.1f} s"))


def register(models_app: typer.Typer, settings: Callable[[], Any], out: Any) -> None:
    """Add ``import`` to ``streamer models``."""

    @models_app.command("import")
    def models_import(
        source: Annotated[str, typer.Argument(help="A model file, an MLflow model directory, or models:/… runs:/…")],
        name: Annotated[str, typer.Option(help="The model's name in the repository.")],
        features: Annotated[
            str | None, typer.Option(help="Input column names, in order (when the model carries none).")
        ] = None,
        reference: Annotated[
            Path | None, typer.Option(help="Training-like data (CSV/Parquet): the card's \\[reference] and proof rows.")
        ] = None,
        sample: Annotated[int, typer.Option(help="Rows drawn from --reference for the proof.")] = 1000,
        holdout: Annotated[
            Path | None, typer.Option(help="Labelled data (CSV/Parquet) for metrics and the gate.")
        ] = None,
        label_column: Annotated[str | None, typer.Option(help="The label column of --holdout.")] = None,
        metric: Annotated[
            str | None, typer.Option(help="Gate metric: auc, accuracy, log_loss, rmse or mae (default by task).")
        ] = None,
        max_regression: Annotated[
            float, typer.Option(help="How much worse than the champion the gate metric may be (its units).")
        ] = 0.01,
        force: Annotated[bool, typer.Option(help="Publish even when the holdout gate refuses.")] = False,
        trust_pickle: Annotated[bool, typer.Option(help="Load a pickle (it runs the code it holds).")] = False,
        threshold: Annotated[float, typer.Option(help="Decision threshold of a binary classifier.")] = 0.5,
        allow_missing: Annotated[bool, typer.Option(help="Let null features reach the model as NaN.")] = False,
        version: Annotated[int | None, typer.Option(help="The version number (default: the next).")] = None,
        round_thresholds: Annotated[
            bool, typer.Option(help="LightGBM: round float64 split thresholds down to float32 before converting.")
        ] = False,
        description: Annotated[str | None, typer.Option(help="\\[card] description.")] = None,
        intended_use: Annotated[str | None, typer.Option(help="\\[card] intended_use.")] = None,
        training_data: Annotated[str | None, typer.Option(help="\\[card] training_data.")] = None,
        limitations: Annotated[str | None, typer.Option(help="\\[card] limitations.")] = None,
        card_file: Annotated[Path | None, typer.Option(help="A TOML file with the \\[card] prose.")] = None,
        tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLflow's own).")] = None,
        canary: Annotated[float | None, typer.Option(help="Then serve it to this share of keys.")] = None,
        shadow: Annotated[bool, typer.Option(help="Then score it in shadow of the champion.")] = False,
        rollout_on: Annotated[
            bool, typer.Option("--rollout", help="Then start the label-driven rollout (\\[rollout.NAME]).")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Convert a trained model to ONNX, prove it answers like the source, check it against the champion on a
        holdout, publish it as the next version of NAME, and optionally deploy it."""
        from streamer.model_import.importer import ImportOptions, import_model

        s = settings()
        deploy = Deploy.of(canary, shadow, rollout_on)
        models_dir = Path(s.models.dir)
        models_dir.mkdir(parents=True, exist_ok=True)
        champion = models_lifecycle.serving_champion(s, name)
        if deploy is not None:
            deploy.check(s, name, champion)
        if tracking_uri is not None:
            from streamer.model_import import mlflow_source

            mlflow_source.set_tracking_uri(tracking_uri)
        prose = {"description": description, "intended_use": intended_use, "training_data": training_data}
        options = ImportOptions(
            source=source,
            name=name,
            models_dir=models_dir,
            trust_pickle=trust_pickle,
            features=tuple(f.strip() for f in features.split(",") if f.strip()) if features else None,
            reference=reference,
            sample=sample,
            holdout=holdout,
            label_column=label_column,
            metric=metric,
            max_regression=max_regression,
            force=force,
            threshold=threshold,
            allow_missing=allow_missing,
            version=version,
            round_thresholds=round_thresholds,
            card=_card_prose(card_file, {**prose, "limitations": limitations}),
        )

        def warn(line: str) -> None:
            warning(line)

        def before_publish(new: int) -> None:
            if deploy is not None and champion is not None:
                deploy.hold(s, out, name, champion, new)

        result = import_model(options, champion, warn, before_publish)
        new = result.model.card.version
        fields = result.event_fields()
        models_lifecycle.emit_event(s, "model-imported", name, str(new), **fields, deploy=deploy and deploy.mode)
        if as_json:
            out.print_json(json.dumps({"model": name, "version": new, "path": str(result.path), **fields}))
        else:
            report(out, result)
        if deploy is not None:
            deploy.apply(s, out, name, new)
        elif champion is not None and not as_json and models_lifecycle.serving_champion(s, name) != new:
            out.print(Text(f"{name} stays on its pinned version: `streamer models promote {name} {new}` serves {new}"))
