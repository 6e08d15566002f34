"""Bytes in, a label out: the feedback envelope (contract section 4), ``{"id": "r-42", "label": 1}``.

Decoding follows the request's rules (``requests.checked`` and ``requests.translate``): the same size limit and
UTF-8 check before parsing, and only ``DecodeError`` whatever the bytes, whose ``reason`` is the dead-letter
reason of undecodable feedback. ``schemas/feedback.schema.json`` describes the same envelope (a test holds the
two to one corpus).
"""

from __future__ import annotations

import math

import msgspec

from streamer.core.errors import NON_FINITE, DecodeError
from streamer.core.requests import DECODE_ERRORS, DEFAULT_MAX_MESSAGE_BYTES, checked, translate
from streamer.core.types import Label


class _WireLabel(msgspec.Struct):
    id: str
    label: float
    model: str | None = None


_label_decoder = msgspec.json.Decoder(_WireLabel)


def decode_label(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Label:
    """Decode one feedback value or raise ``DecodeError``; ``model`` is optional and informational."""
    raw = checked(value, max_bytes)
    try:
        wire = _label_decoder.decode(raw)
    except DECODE_ERRORS as exc:
        raise translate(exc) from None
    if not math.isfinite(wire.label):
        raise DecodeError(NON_FINITE, "the label is not a finite number")
    return Label(id=wire.id, label=wire.label, model=wire.model)
