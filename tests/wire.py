"""One request value decoded, for tests: the product decodes batches only (``core.requests.decode_requests``),
so a test asking about one value asks the batch decoder about a batch of one, and gets the request or the
``DecodeError`` that would make it a dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.core.requests import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_ROWS, decode_requests
from streamer.core.types import Tensor


@dataclass(frozen=True, slots=True)
class RequestBody:
    """One decoded request. Exactly one of ``features`` or ``tensors`` is set."""

    id: str | None
    model: str | None
    features: dict[str, float | str | None] | None = None
    tensors: tuple[Tensor, ...] | None = None

    @property
    def is_oip(self) -> bool:
        return self.tensors is not None


def decode_request(
    value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_rows: int = DEFAULT_MAX_ROWS
) -> RequestBody:
    """Decode one request value (contract section 2) or raise its ``DecodeError``."""
    decoded = decode_requests([value], max_bytes=max_bytes, max_rows=max_rows)
    if decoded.errors:
        raise decoded.errors[0]
    wire, tensors = decoded.wires[0], decoded.tensors.get(0)
    features = None if tensors is not None else dict(wire.features)  # type: ignore[arg-type]
    return RequestBody(wire.id, wire.model, features, tensors)
