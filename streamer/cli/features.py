"""``streamer features load | get``: entity features in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from streamer.cli.base import app, err, out, plain, settings, warning
from streamer.core import names
from streamer.core.errors import ConfigError, StreamerError

# ---------------------------------------------------------------------------------------------- features

features_app = typer.Typer(help="Entity features in Redis, read by a graph's enrichment stage.")
app.add_typer(features_app, name="features")


def _entity_rows(path: Path, key_field: str) -> Iterator[tuple[bytes, dict[str, float]]]:
    """(key, features) per line of a JSONL file: ``{"key": ..., "features": {...}}`` or a flat object whose
    other fields are the features. A bad line is one error naming the file and line (the lines before it are
    loaded: loading again is harmless)."""
    import math

    from streamer.adapters.redis_entities import feature_key

    try:
        lines = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"features load: {path}: {exc.strerror}") from None
    with lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                body = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{where}: not JSON ({exc})") from None
            if not isinstance(body, dict) or key_field not in body:
                raise ConfigError(f"{where}: not an object with a {key_field!r} field")
            raw_key = body.pop(key_field)
            if isinstance(raw_key, bool) or not isinstance(raw_key, str | int | float) or raw_key == "":
                raise ConfigError(f"{where}: {key_field!r} must be a non-empty string or a number")
            key = feature_key(raw_key)
            if key is None:
                raise ConfigError(f"{where}: {key_field!r} is not a usable key")
            nested = isinstance(body.get("features"), dict)
            features = body["features"] if nested else body  # nested: the other fields are not features
            if not isinstance(features, dict) or not features:
                raise ConfigError(f"{where}: no features")
            for name, value in features.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ConfigError(f"{where}: feature {name!r} is {json.dumps(value)}, not a finite number")
            yield key, features


def declared_entities(s: Any) -> list[str]:
    """The entity types the declared graphs' enrichment stages read (none without graphs)."""
    from streamer.adapters import graph_repository

    models_dir = Path(s.models.dir)
    if not models_dir.is_dir():
        return []
    directory = graph_repository.graphs_dir(models_dir, s.models.graphs_dir)
    specs = graph_repository.read_graphs(directory) if directory is not None else []
    return sorted({stage.entity for spec in specs for stage in spec.stages.values() if stage.kind == "enrich"})


def _undeclared(s: Any, entity: str) -> str | None:
    """Why ``entity`` looks like a typo (graphs read entities, none of them this one), or None."""
    declared = declared_entities(s)
    if not declared or entity in declared:
        return None
    return f"no graph reads entity type {entity!r} ({names.hint(entity, declared)})"


@features_app.command("load")
def features_load(
    entity: Annotated[str, typer.Argument(help="The entity type, e.g. account.")],
    file: Annotated[Path, typer.Argument(help='JSONL: {"key": ..., "features": {"name": number}} or flat objects.')],
    key_field: Annotated[str, typer.Option("--key-field", help="The field holding the entity key.")] = "key",
    ttl_s: Annotated[int | None, typer.Option("--ttl-s", min=1, help="Seconds each entity lives.")] = None,
) -> None:
    """Write entity features to Redis ({prefix}:entity:ENTITY:KEY hashes, merged into existing ones)."""
    import redis

    from streamer.adapters.redis_entities import EntityFeatureStore

    s = settings()
    typo = _undeclared(s, entity)
    if typo is not None:  # loading ahead of the graph that will read it is allowed: said, not refused
        warning(f"features load: {typo}")
    store = EntityFeatureStore.from_settings(s.redis)
    try:
        store.key_of(entity, b"")  # a bad entity type is refused before reading the file
        written = store.put(entity, _entity_rows(file, key_field), ttl_s=ttl_s)
    except ValueError as exc:
        raise ConfigError(f"features load: {exc}") from None
    except redis.RedisError as exc:
        raise StreamerError(f"features load: Redis: {exc}") from None
    out.print(plain(f"loaded {written} {entity} entities from {file}"))


@features_app.command("get")
def features_get(
    entity: Annotated[str, typer.Argument(help="The entity type, e.g. account.")],
    key: Annotated[str, typer.Argument(help="The entity key (UTF-8).")],
) -> None:
    """Print one entity's features as JSON (exit code 1 when it is absent)."""
    import math

    import redis

    from streamer.adapters.redis_entities import EntityFeatureStore

    s = settings()
    typo = _undeclared(s, entity)
    if typo is not None:
        raise ConfigError(f"features get: {typo}")
    store = EntityFeatureStore.from_settings(s.redis)
    try:
        stored = store.read(entity, key.encode())
    except ValueError as exc:
        raise ConfigError(f"features get: {exc}") from None
    except redis.RedisError as exc:
        raise StreamerError(f"features get: Redis: {exc}") from None
    if not stored:
        where = store.key_of(entity, key.encode()).decode(errors="replace")
        err.print(plain(f"no {entity} entity {key!r} ({where})"))
        raise typer.Exit(1)
    values: dict[str, Any] = {}
    for name, raw in sorted(stored.items()):
        text = raw.decode(errors="backslashreplace")
        try:
            number = float(text)
        except ValueError:
            number = None
        # Not a finite number: shown as stored (a lookup takes the default for it).
        values[name] = number if number is not None and math.isfinite(number) else text
    out.print_json(json.dumps(values))
