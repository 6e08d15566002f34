"""Names a user typed, checked against the names that exist: one rule for every "did you mean".

Why one module: a typo in a filter or an argument (``--model fraudd``, ``--versions 1,9``, a topic, a graph, a
``[kafka.client]`` property) must never be an empty answer or a silent default. Every command and the settings
loader refuse it with the same shape of line, so a user learns one shape:

    no model named 'fraudd' in models (did you mean 'fraud'?)
    no model named 'x' in models (known: fraud, fraud-online)

Invariants:

- ``suggestion`` returns a name from ``known`` or None, never anything else; the closest match wins (difflib's
  ratio, cut-off 0.6), ties broken by the order of ``known``;
- ``hint`` always says something: the suggestion, else the known names (at most ``MAX_LISTED``, sorted), else
  that there are none -- a user is never left without the next step.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping

from streamer.core.errors import ConfigError

MAX_LISTED = 12


def suggestion(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name``, when one is close enough to be the one meant."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=1, cutoff=0.6)
    return close[0] if close else None


def hint(name: str, known: Iterable[str], listed: bool = True) -> str:
    """``did you mean 'x'?``, else ``known: a, b`` (``listed``; else ``none is close``), else ``none exist``."""
    names = sorted(set(known))
    close = suggestion(name, names)
    if close is not None:
        return f"did you mean {close!r}?"
    if not names:
        return "none exist"
    if not listed:
        return "none is close"
    listed = ", ".join(names[:MAX_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else "")
    return f"known: {listed}"


def unknown(
    kind: str, name: str, known: Iterable[str], where: str = "", then: str = "", listed: bool = True
) -> ConfigError:
    """The refusal of a name that does not exist: ``no KIND named 'NAME'[ in WHERE] (HINT)[; THEN]``; ``listed``:
    whether the hint may list the known names (not for a cluster's topics: ``then`` says where to see them)."""
    place = f" in {where}" if where else ""
    after = f"; {then}" if then else ""
    return ConfigError(f"no {kind} named {name!r}{place} ({hint(name, known, listed)}){after}")


def check(kind: str, name: str, known: Iterable[str], where: str = "", then: str = "") -> str:
    """``name`` when it is one of ``known``, else the ``unknown`` refusal."""
    names = list(known)
    if name not in names:
        raise unknown(kind, name, names, where, then)
    return name


def check_model_ref(ref: str, versions: Mapping[str, Collection[int]], where: str, then: str = "") -> str:
    """``ref`` (``name`` or ``name@version``, as a request names a model or graph) when ``versions`` (name ->
    its versions) has it, else the refusal naming the closest name or the versions there are."""
    name, at, version = ref.partition("@")
    if name not in versions:
        raise unknown("model", name, versions, where, then)
    if at and (not version.isdigit() or int(version) not in versions[name]):
        shown = ", ".join(str(v) for v in sorted(versions[name]))
        after = f"; {then}" if then else ""
        raise ConfigError(f"{ref!r}: {name} has no version {version!r} in {where} (versions: {shown}){after}")
    return ref
