"""Where a setting's value came from, and the dotted names that error lines and ``config show`` use."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Literal, NamedTuple


class Source(NamedTuple):
    """Where a setting's effective value came from."""

    kind: Literal["default", "file", "environment", "dev stack"]
    where: str | None = None  # the file's path, the variable's name, the dev stack's state file

    def __str__(self) -> str:
        return self.kind if self.where is None else f"{self.kind} {self.where}"

    def cause(self) -> str:
        """The end of an error line: ``(from STREAMER_X)``, ``(from streamer.toml)``, ``(default)``."""
        return "(default)" if self.where is None else f"(from {self.where})"


DEFAULT = Source("default")


def setting_name(*parts: str) -> str:
    """The dotted name of a setting; a part that is not a bare TOML key is quoted: ``kafka.client."sasl.password"``."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in parts)


def source_of(name: str, sources: Mapping[str, Source]) -> Source:
    """The source of ``name`` or of the nearest setting holding it (``kafka.client."x"`` -> ``kafka.client``)."""
    while name:
        if name in sources:
            return sources[name]
        name = name.rpartition(".")[0]
    return DEFAULT
