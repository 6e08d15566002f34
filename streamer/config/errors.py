"""msgspec's validation errors as one line naming the setting, the problem and where the value came from."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Annotated, Any

import msgspec

from streamer.config.redaction import redact
from streamer.config.schema import SECTIONS
from streamer.config.sources import Source, setting_name
from streamer.core.errors import ConfigError

# ---------------------------------------------------------------------------------------------- errors

_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.(\w+)|\[(\.\.\.|\d+)\]")
_BOUND = re.compile(r"^Expected `(?P<type>[^`]+)` (?P<op>>=|<=|>|<) (?P<bound>\S+)$")
_TYPE = re.compile(r"^Expected `(?P<type>[^`]+)`, got `\w+`$")
_BOUND_WORDS = {">=": "at least", ">": "greater than", "<=": "at most", "<": "less than"}


def error_of(
    exc: msgspec.ValidationError, root: Any, root_type: Any, source: Source, prefix: list[str] | None = None
) -> ConfigError:
    """msgspec's ``<problem> - at `$.a.b[...]``` about ``root`` (converted to ``root_type``, read from ``source``)
    as ``a.b.KEY: <problem> (from <source>)``, the value shown redacted. msgspec names a dict's entries
    ``[...]``: the entry at fault is found again by converting each one alone."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    problem, path = match["problem"], match["path"] or ""
    parts, value, hint = list(prefix or []), root, root_type
    for field, index in _STEP.findall(path):
        base = bare(hint)
        if field:
            parts.append(field)
            hint = _field_types(base).get(field, Any)
            value = value.get(field) if isinstance(value, dict) else None
        elif index == "..." and isinstance(value, dict):
            value_type = typing.get_args(base)[1] if typing.get_args(base) else Any
            key = next((k for k in value if _fails({k: value[k]}, base)), next(iter(value), ""))
            parts.append(str(key))
            hint, value = value_type, value.get(key)
        elif index.isdigit() and isinstance(value, list) and int(index) < len(value):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{index}]"]
            hint, value = (typing.get_args(base) or (Any,))[0], value[int(index)]
    name = setting_name(*parts) if parts else ""
    where = source.cause()
    if unknown := re.match(r"^Object contains unknown field `(?P<key>.+)`$", problem):
        key = unknown["key"]
        if not parts:
            sections = [*SECTIONS, "rollout"]
            close = difflib.get_close_matches(key, sections, n=1)
            advice = f"did you mean [{close[0]}]?" if close else f"known are {', '.join(sections)}"
            return ConfigError(f"unknown section [{key}] {where}: {advice}")
        known = list(_field_types(bare(hint)))
        close = difflib.get_close_matches(key, known, n=1)
        advice = f"did you mean {setting_name(*parts, close[0])}?" if close else f"known are {', '.join(known)}"
        return ConfigError(f"unknown setting {setting_name(*parts, key)} {where}: {advice}")
    shown = _shown(name, value)
    if bound := _BOUND.match(problem):
        text = f"must be {_BOUND_WORDS[bound['op']]} {bound['bound']}, got {shown}"
    elif expected := _TYPE.match(problem):
        wanted = expected["type"].replace("object", "table").replace("null", "none")
        if parts[:1] == ["rollout"] and len(parts) <= 2 and wanted == "table":
            wanted = "one table per model, e.g. [rollout.fraud]"
        elif len(parts) == 1 and wanted == "table":
            wanted = f"a table [{name}]"
        text = f"expected {wanted}, got {shown}"
    elif problem.startswith("Invalid enum value"):
        text = f"{shown} is not one of {', '.join(map(str, typing.get_args(bare(hint))))}"
    else:
        text = f"{problem[:1].lower()}{problem[1:]}, got {shown}"
    return ConfigError(f"{name or 'config'}: {text} {where}")


def _shown(name: str, value: Any) -> str:
    """A value as an error line shows it: repr, one line, secrets redacted, at most 120 characters."""
    text = repr(redact(name, value))
    return text if len(text) <= 120 else f"{text[:117]}..."


def bare(hint: Any) -> Any:
    """The type without ``Annotated`` bounds or ``| None``."""
    if typing.get_origin(hint) is Annotated:
        return bare(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return bare(options[0]) if len(options) == 1 else hint
    return hint


def optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in typing.get_args(hint)


def _field_types(cls: Any) -> dict[str, Any]:
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return {f.name: f.type for f in msgspec.structs.fields(cls)}
    if dataclasses.is_dataclass(cls):
        return dict(typing.get_type_hints(cls))
    return {}


def _fails(value: Any, hint: Any) -> bool:
    try:
        msgspec.convert(value, hint, strict=True)
    except msgspec.ValidationError:
        return True
    return False
