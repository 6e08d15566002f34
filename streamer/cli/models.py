"""``streamer models list | validate | freeze``, the lifecycle commands of ``models_lifecycle`` and ``models import``
(``model_import``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from streamer.cli import model_import, models_lifecycle
from streamer.cli.base import app, out, plain, settings
from streamer.core import names
from streamer.core.errors import ConfigError
from streamer.core.routing import Serving, champion

models_app = typer.Typer(help="The model repository.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every model version in the repository, with its card and whether it loads."""
    from streamer.adapters import model_repository
    from streamer.wiring.serving_state import serving_policy

    s = settings()
    models_dir = s.require_models_dir()
    result = model_repository.scan(models_dir)
    # what the control channel says wins over the file, as in every serving mode (Redis down: the file's, said)
    policy = serving_policy(s)
    rows: list[dict[str, Any]] = []
    for name, versions in sorted(result.loaded.items()):
        serving = champion(versions, policy.get(name, Serving()).pin)
        for version, model in sorted(versions.items()):
            card = model.card
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "status": "serving" if version == serving else "loaded",
                    "task": card.task,
                    "features": list(card.features),
                    "metrics": card.card.get("metrics", {}),
                    "path": str(model.path.parent),
                }
            )
    for path, error in sorted(result.refused.items()):
        rows.append({"name": path.parent.name, "version": path.name, "status": "refused", "error": str(error)})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("model", "version", "status", "task", "features", "metrics")
    for row in rows:
        if row["status"] == "refused":
            table.add_row(plain(row["name"]), str(row["version"]), Text("refused", "red"), plain(row["error"]), "", "")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in row["metrics"].items())
        table.add_row(
            plain(row["name"]),
            str(row["version"]),
            row["status"],
            row["task"],
            str(len(row["features"])),
            plain(metrics),
        )
    out.print(table)


@models_app.command("validate")
def models_validate(
    version_dir: Annotated[Path, typer.Argument(help="A <models>/<name>/<version> directory.")],
    holdout: Annotated[Path | None, typer.Option(help="Labelled data (CSV/Parquet): print its metrics.")] = None,
    label_column: Annotated[str | None, typer.Option(help="The label column of --holdout.")] = None,
) -> None:
    """Load one model version as a worker would; a refusal is one line naming the file (exit code 2). With
    --holdout, the version's metrics on it (accuracy, AUC, log loss, or RMSE), as `models import` measures them."""
    from streamer.adapters import model_repository

    model = model_repository.load_version(version_dir)
    out.print(
        plain(f"ok: {model.card.ref} ({len(model.card.features)} features, outputs {', '.join(model.output_names)})")
    )
    if holdout is not None or label_column is not None:
        model_import.print_holdout(model, holdout, label_column, out)


@models_app.command("freeze")
def models_freeze(
    name: Annotated[str, typer.Argument(help="An online model (its card has an \\[online] table).")],
    version: Annotated[int | None, typer.Option(help="The online version; default: the highest.")] = None,
) -> None:
    """Write an online model's current shared weights (Redis) as the next version: a plain ONNX model.

    The new version has the same card without \\[online] (it serves, it does not learn) and, being the highest,
    is what running workers serve from their next model scan on (hot reload: within seconds, no restart) unless a
    pin holds the model; pin the online version first to keep it serving.
    """
    from streamer.adapters import model_repository, online
    from streamer.adapters.redis_state import RedisStateStore

    s = settings()
    models_dir = s.require_models_dir()
    every = model_repository.version_dirs(models_dir)
    names.check("model", name, [d.parent.name for d in every], str(models_dir))
    versions = [d for d in every if d.parent.name == name]
    chosen = [d for d in versions if version is None or d.name == str(version)]
    if not chosen:
        shown = ", ".join(d.name for d in versions)
        raise ConfigError(f"models freeze: {name} has no version {version} in {models_dir} (versions: {shown})")
    model = model_repository.load_version(chosen[-1])
    if model.card.online is None:
        raise ConfigError(f"models freeze: {model.card.ref} is not an online model (its card has no [online])")
    store = RedisStateStore.from_settings(s.redis)
    try:
        target = online.freeze(store, model, models_dir)
    except LookupError as exc:
        raise ConfigError(f"models freeze: {exc}") from None
    frozen = model_repository.load_version(target)
    out.print(plain(f"froze {model.card.ref} into {frozen.card.ref} at {target}"))
    out.print(
        plain(
            f"running workers serve {frozen.card.ref} for `{name}` within seconds (hot reload) unless a pin holds "
            f"{name}: `streamer models pin {name} {model.card.version}` keeps the online version serving"
        )
    )


models_lifecycle.register(models_app, settings, out)
model_import.register(models_app, settings, out)
