"""``streamer graph list | show NAME``: the declared scoring graphs as the worker loads them (validated
against the models, so a broken graph is the same one-line error here as at the worker's start)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from streamer.core import names
from streamer.core.errors import ConfigError


def register(app: typer.Typer, settings: Callable[[], Any], out: Any) -> None:
    graph_app = typer.Typer(help="Declared scoring graphs (graphs/<name>.toml beside the models).")
    app.add_typer(graph_app, name="graph")

    def loaded() -> Any:
        from streamer.wiring.models import load_models

        return load_models(settings()).serving.current.catalog

    @graph_app.command("list")
    def graph_list(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
        """Every graph: its stages, inputs and output."""
        graphs = sorted(loaded().graphs.values(), key=lambda g: g.ref)
        rows = [
            {
                "graph": g.ref,
                "stages": {name: g.stages[name].kind for name in g.order},
                "inputs": list(g.inputs),
                "output": g.output,
                "source": g.source,
            }
            for g in graphs
        ]
        if as_json:
            out.print_json(json.dumps(rows))
            return
        table = Table("graph", "stages (in order)", "output")
        for row in rows:
            stages = ", ".join(f"{n} ({k})" for n, k in row["stages"].items())
            table.add_row(Text(row["graph"]), Text(stages), Text(row["output"]))
        out.print(table)

    @graph_app.command("show")
    def graph_show(
        name: str,
        svg: Annotated[
            Path | None, typer.Option(help="Also draw it to this SVG (or .png) file with graphviz's dot, if installed.")
        ] = None,
        dot: Annotated[bool, typer.Option("--dot", help="Print the graphviz source instead of text.")] = False,
    ) -> None:
        """One graph, stage by stage in execution order, with what each stage reads."""
        from streamer.core.graph.drawing import describe, to_dot

        catalog = loaded()
        matches = [g for ref, g in catalog.graphs.items() if ref == name or g.name == name]
        if not matches:
            known = [g.name for g in catalog.graphs.values()] + list(catalog.graphs)
            raise names.unknown("graph", name, known, then="`streamer graph list` shows them")
        spec = max(matches, key=lambda g: g.version)
        source = to_dot(spec)
        if dot:
            print(source, end="")
        else:
            for line in describe(spec):
                out.print(line, highlight=False, markup=False)
        if svg is not None:
            executable = shutil.which("dot")
            if executable is None:
                raise ConfigError("graph show --svg: graphviz's `dot` is not installed (apt-get install graphviz)")
            kind = svg.suffix.lstrip(".") or "svg"
            drawn = subprocess.run(
                [executable, f"-T{kind}", "-o", str(svg)], input=source, text=True, capture_output=True, timeout=30
            )
            if drawn.returncode != 0:
                cause = drawn.stderr.strip().splitlines()[-1] if drawn.stderr.strip() else f"exit {drawn.returncode}"
                raise ConfigError(f"graph show --svg {svg}: graphviz's dot failed: {cause}")
            out.print(Text(f"drawn to {svg}"))
