"""Scoring graphs on disk: ``graphs/<name>.toml`` beside the model repository (``core.graph.spec``).

``load_graphs`` parses every file and checks every graph against the models the worker serves, so that a graph
naming a missing model, reading a feature nobody provides or forming a cycle stops the start with one line
naming the graph and the stage. The graphs join the catalog under their own cards: a request names a graph
exactly as it names a model.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from streamer.core.errors import ConfigError
from streamer.core.graph.spec import BINARY, GraphSpec, bind, card_of, parse_graph
from streamer.core.routing import Catalog


def graphs_dir(models_dir: Path, configured: str) -> Path | None:
    """The configured directory, else ``graphs/`` beside ``models_dir`` when it exists."""
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise ConfigError(f"models.graphs_dir: {path} is not a directory")
        return path
    beside = models_dir.resolve().parent / "graphs"
    return beside if beside.is_dir() else None


def read_graphs(directory: Path) -> list[GraphSpec]:
    graphs = []
    for path in sorted(directory.glob("*.toml")):
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        graphs.append(parse_graph(table, str(path)))
    return graphs


def with_graphs(catalog: Catalog, graphs: list[GraphSpec]) -> Catalog:
    """``catalog`` serving ``graphs`` too, each bound to the catalog's models: ordered by what its stages read,
    their models' features included, and checked against them (ConfigError otherwise)."""
    cards = {name: dict(versions) for name, versions in catalog.cards.items()}
    by_ref = dict(catalog.graphs)
    for parsed in graphs:
        if parsed.name in catalog.cards:
            raise ConfigError(f"{parsed.source}: a model is already named {parsed.name!r}")
        spec = bind(parsed, catalog.resolve)
        output = spec.stages[spec.output]
        task = catalog.resolve(output.model).task if output.kind == "model" and output.model else BINARY
        cards.setdefault(spec.name, {})[spec.version] = card_of(spec, task)
        by_ref[spec.ref] = spec
    return Catalog(cards, catalog.default, catalog.pins, catalog.serving, by_ref)
