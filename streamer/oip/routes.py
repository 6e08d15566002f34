"""The URL paths of the Open Inference Protocol v2 (KServe v2 REST) that ``streamer serve`` answers. Pure.

``route`` turns a method and a path into a ``Route`` or an ``OipError``: 404 for a path the protocol does not
define, 405 for the wrong method, and an ``unknown-model`` error (its status from the reason table) for a
version that is not a number. ``model_string`` is the stream's model string for a URL's model and version, so
that an on-demand request is routed exactly like a request record naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.core.errors import UNKNOWN_MODEL, DecodeError
from streamer.oip.codec import OipError


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed URL path: ``kind`` is live, ready, server, model, model_ready, infer or metrics."""

    kind: str
    model: str | None = None
    version: int | None = None


_GET_KINDS = {"": "model", "ready": "model_ready"}


def route(method: str, path: str) -> Route:
    """The endpoint of ``method path`` or ``OipError`` (404 for a path the protocol does not define, 405 for
    the wrong method, ``unknown-model`` for a version that is not a number)."""
    path = path.split("?", 1)[0].rstrip("/")
    if method == "GET" and path == "/metrics":
        return Route("metrics")
    parts = path.split("/")[1:]
    if not parts or parts[0] != "v2":
        raise OipError(404, f"no endpoint {path or '/'} (the Open Inference Protocol v2 lives under /v2)")
    rest = parts[1:]
    if rest in (["health", "live"], ["health", "ready"], []):
        kind = {0: "server"}.get(len(rest)) or rest[1]
        _method(method, "GET", path)
        return Route(kind)
    if len(rest) < 2 or rest[0] != "models" or not rest[1]:
        raise OipError(404, f"no endpoint {path}")
    name, tail = rest[1], rest[2:]
    version = None
    if len(tail) >= 2 and tail[0] == "versions":
        if not tail[1].isdigit():
            raise OipError.of(DecodeError(UNKNOWN_MODEL, f"model {name!r} has no version {tail[1]!r}"))
        version, tail = int(tail[1]), tail[2:]
    if tail == ["infer"]:
        _method(method, "POST", path)
        return Route("infer", name, version)
    if len(tail) <= 1 and (not tail or tail[0] in _GET_KINDS):
        _method(method, "GET", path)
        return Route(_GET_KINDS[tail[0] if tail else ""], name, version)
    raise OipError(404, f"no endpoint {path}")


def _method(method: str, expected: str, path: str) -> None:
    if method != expected:
        raise OipError(405, f"{path} takes {expected}, not {method}")


def model_string(name: str, version: int | None) -> str:
    """The stream's model string (the ``streamer-model`` header) for a URL's model and version."""
    return name if version is None else f"{name}@{version}"
