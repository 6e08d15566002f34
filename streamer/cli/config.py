"""``streamer config show``: every effective setting, one per line, with where its value came from.

Why: with three sources (default, file, environment) and the dev stack's addresses filled in, "what does the
worker actually run with?" deserves an answer that is not a debugger. The command loads the settings exactly as
every other command does (``config.load_with_sources``), so a bad setting fails here with the same one line.

Invariants (tests/unit/test_config_show.py):

- one line per setting (a dict setting: one per key, ``kafka.client."sasl.password"``; a rollout policy: one per
  field), in the order the settings are declared, each with its source: ``default``, ``file <path>``,
  ``environment <VAR>`` or ``dev stack <state file>``;
- no secret is printed, in either format: values pass through ``config.redact`` (secret names, URL passwords);
- ``--json`` prints one JSON object: ``{"config_file", "settings": [{"setting", "path", "value", "source",
  "from"}], "unknown_env"}``, ``source`` one of default, file, environment, dev stack and ``from`` the path,
  variable or state file (null for a default).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple

import msgspec
import typer

from streamer import config
from streamer.config import DEFAULT, SECTIONS, Settings, Source, redact, setting_name, source_of


class Row(NamedTuple):
    setting: str  # dotted, a key that is not bare quoted: kafka.client."sasl.password"
    path: tuple[str, ...]  # the same, unquoted: ("kafka", "client", "sasl.password")
    value: Any  # already redacted
    source: Source


def rows(settings: Settings, sources: Mapping[str, Source]) -> list[Row]:
    """The effective settings, redacted, in declaration order."""
    found: list[Row] = []

    def add(path: tuple[str, ...], value: Any, source: Source) -> None:
        name = setting_name(*path)
        found.append(Row(name, path, redact(name, value), source))

    for section, cls in SECTIONS.items():
        values = getattr(settings, section)
        for field in msgspec.structs.fields(cls):
            value, source = getattr(values, field.name), source_of(setting_name(section, field.name), sources)
            if isinstance(value, dict) and value:  # one line per key, all from the source of the whole dict
                for key, item in value.items():
                    add((section, field.name, str(key)), item, source)
            else:
                add((section, field.name), value, source)
    for model, policy in settings.rollout.items():
        for field in dataclasses.fields(policy):
            path = ("rollout", model, field.name)
            add(path, getattr(policy, field.name), sources.get(setting_name(*path), DEFAULT))
    if not settings.rollout:
        add(("rollout",), {}, DEFAULT)
    return found


def render_text(settings: Settings, found: list[Row]) -> str:
    """``name = value  # source`` lines, values as JSON (``null``: unset), the comments aligned."""
    pairs = [(f"{row.setting} = {json.dumps(row.value)}", str(row.source)) for row in found]
    width = min(max(len(left) for left, _ in pairs), 60)
    lines = [f"{left:<{width}}  # {right}" for left, right in pairs]
    if settings.unknown_env:
        lines.append(f"# ignored (not a setting): {', '.join(settings.unknown_env)}")
    return "\n".join(lines)


def render_json(settings: Settings, found: list[Row]) -> str:
    body = {
        "config_file": None if settings.source == "defaults" else settings.source,
        "settings": [
            {
                "setting": row.setting,
                "path": list(row.path),
                "value": row.value,
                "source": row.source.kind,
                "from": row.source.where,
            }
            for row in found
        ],
        "unknown_env": list(settings.unknown_env),
    }
    return json.dumps(body, indent=2)


def register(app: typer.Typer, config_path: Callable[[], str | None]) -> None:
    """Add ``config show`` to the ``streamer`` command (``config_path``: the ``--config`` option's value)."""
    config_app = typer.Typer(help="The settings: what the worker runs with, and why.")
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def config_show(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Print every effective setting and where it came from; secrets redacted."""
        settings, sources = config.load_with_sources(config_path())
        found = rows(settings, sources)
        typer.echo(render_json(settings, found) if as_json else render_text(settings, found))
