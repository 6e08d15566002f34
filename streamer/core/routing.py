"""Which model version serves a request (contract sections 2 and 6).

A request names its model in its ``model`` field, else in the ``streamer-model`` header, else gets the
default: the configured one, or the only model in the repository. ``name`` means the pinned version if the
config pins one, else the highest; ``name@version`` means exactly that version. Anything that does not resolve
is an ``unknown-model`` dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamer.core.cards import ModelCard
from streamer.core.errors import UNKNOWN_MODEL, DecodeError


@dataclass(frozen=True, slots=True)
class Catalog:
    cards: Mapping[str, Mapping[int, ModelCard]]
    default: str | None = None
    pins: Mapping[str, int] = field(default_factory=dict)

    @property
    def default_name(self) -> str | None:
        if self.default is not None:
            return self.default
        return next(iter(self.cards)) if len(self.cards) == 1 else None

    def serving_version(self, name: str) -> int | None:
        versions = self.cards.get(name)
        if not versions:
            return None
        pinned = self.pins.get(name)
        return pinned if pinned in versions else max(versions)

    def resolve(self, requested: str | None) -> ModelCard:
        if requested is None or requested == "":
            requested = self.default_name
            if requested is None:
                names = ", ".join(sorted(self.cards)) or "none"
                raise DecodeError(
                    UNKNOWN_MODEL, f"the request names no model and there is no default (models: {names})"
                )
        name, at, version_text = requested.partition("@")
        versions = self.cards.get(name)
        if not versions:
            raise DecodeError(UNKNOWN_MODEL, f"no model named {name!r}")
        if not at:
            version = self.serving_version(name)
            assert version is not None
            return versions[version]
        if not version_text.isdigit() or int(version_text) not in versions:
            raise DecodeError(UNKNOWN_MODEL, f"model {name!r} has no version {version_text!r}")
        return versions[int(version_text)]
