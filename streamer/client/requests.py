"""What ``streamer.client`` sends: a ``Request`` (contract section 2) and its encoding, ids filled in.

An id the caller leaves out is ``<client prefix>-<n>``: unique per client (the prefix is a fresh uuid), so
that the router can tell the client's answers from every other producer's on the shared output topics.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

Features = Mapping[str, float | int | str | None]
# (value, key, headers) of one request record, as the producer takes it
RequestRecord = tuple[bytes, bytes | None, list[tuple[str, bytes | str]] | None]


@dataclass(frozen=True, slots=True)
class Request:
    """One request (contract section 2). ``id`` defaults to a fresh one (``<client uuid>-<n>``); ``key`` places
    it (all requests of a key are answered in order); ``model`` is a name or ``name@version`` (default: the
    worker's default model); ``headers`` are passed through to the request record."""

    features: Features
    key: bytes | str | None = None
    model: str | None = None
    id: str | None = None
    headers: Sequence[tuple[str, bytes | str]] | None = None


def _enc_hook(value: Any) -> Any:
    """numpy scalars (``np.float32(1.5)``) as plain numbers."""
    item = getattr(value, "item", None)
    if item is None:
        raise NotImplementedError(f"cannot encode {type(value).__name__} as a feature value")
    return item()


_encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode


def encode_requests(
    requests: Iterable[Request | Features], prefix: str, counter: itertools.count
) -> tuple[list[str], list[RequestRecord]]:
    """(ids, records) of ``requests`` (a bare features mapping is a ``Request`` with defaults), in order."""
    ids: list[str] = []
    records: list[RequestRecord] = []
    for request in requests:
        if not isinstance(request, Request):
            request = Request(request)
        ident = request.id if request.id is not None else f"{prefix}-{next(counter)}"
        body: dict[str, Any] = {"id": ident, "features": request.features}
        if request.model is not None:
            body["model"] = request.model
        key = request.key.encode() if isinstance(request.key, str) else request.key
        ids.append(ident)
        records.append((_encode(body), key, list(request.headers) if request.headers else None))
    return ids, records
