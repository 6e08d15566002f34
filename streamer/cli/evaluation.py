"""``streamer eval show``: the shared rolling evaluation."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from streamer.cli.base import app, out, plain, settings
from streamer.core import names

eval_app = typer.Typer(help="Rolling evaluation from joined labels (shared by all workers, in Redis).")
app.add_typer(eval_app, name="eval")


@eval_app.command("show")
def eval_show(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Count, accuracy, log loss, precision, recall and AUC per model version and window."""
    import dataclasses
    import math
    import time

    from streamer.adapters import model_repository
    from streamer.adapters.redis_state import RedisStateStore
    from streamer.core.evaluation import parse_windows

    s = settings()
    version_dirs = model_repository.version_dirs(s.require_models_dir())
    if model is not None:  # a typo is an error, not an empty table
        names.check("model", model, [d.parent.name for d in version_dirs], str(s.models.dir))
    store = RedisStateStore.from_settings(s.redis, windows=parse_windows(s.evaluation.windows))
    now = time.time()
    rows = []
    for version_dir in version_dirs:
        name, version = version_dir.parent.name, version_dir.name
        if model is not None and name != model:
            continue
        for window in store.windows:
            m = store.metrics(name, version, window, now)
            rows.append({"model": name, "version": version, "window": window.name, **dataclasses.asdict(m)})
    figures = ("accuracy", "log_loss", "precision", "recall", "auc")
    if as_json:
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        out.print_json(json.dumps(clean))
        return
    table = Table("model", "version", "window", "labels", "accuracy", "log loss", "precision", "recall", "AUC")
    for r in rows:
        cells = ["—" if math.isnan(r[k]) else f"{r[k]:.4f}" for k in figures]
        table.add_row(plain(r["model"]), r["version"], r["window"], str(r["count"]), *cells)
    out.print(table)
