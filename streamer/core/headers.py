"""The Kafka headers of the contract (docs/contract.md, "Headers"), and the dead-letter envelope built from them.

A dead letter is the request's key and value, byte for byte, with the request's own headers followed by these:
``streamer-error`` (the reason, one of ``errors.REASONS``), ``streamer-error-detail`` (one human sentence) and the
request's coordinates ``streamer-source-topic``/``-partition``/``-offset`` (contract section 5). Predictions and
shadow predictions carry the coordinates too (an extension: the worker's restart recovery reads them back).
Only when the dead-letter topic would refuse the record is its value cut to what fits, with
``streamer-original-size`` and ``streamer-original-sha256`` saying what the original was.

``schemas/dead-letter.schema.json`` describes these headers; a test checks it against this module and against
the reason table, and validates the headers of dead letters written by a running worker of each engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from streamer.core.errors import DecodeError
from streamer.core.types import Headers, SourceRef

# On requests (optional): the model or ``name@version``, when the value's ``model`` field is absent.
MODEL_HEADER = "streamer-model"
# On dead letters.
ERROR_HEADER = "streamer-error"
ERROR_DETAIL_HEADER = "streamer-error-detail"
# On every output: the request's coordinates (UTF-8 text).
SOURCE_TOPIC = "streamer-source-topic"
SOURCE_PARTITION = "streamer-source-partition"
SOURCE_OFFSET = "streamer-source-offset"
# On dead letters whose value was cut to fit the dead-letter topic.
ORIGINAL_SIZE_HEADER = "streamer-original-size"
ORIGINAL_SHA256_HEADER = "streamer-original-sha256"

_encode = msgspec.json.Encoder().encode

# librdkafka counts a message as key + value + header names and values; the record and batch framing of the
# protocol (varints, a 61-byte batch header, per-header lengths) comes on top. This margin covers that framing.
RECORD_OVERHEAD_BYTES = 512


def model_from_headers(headers: Headers | None) -> str | None:
    """The ``streamer-model`` header (contract section 2): a model name or ``name@version``, if present.

    A header value that is not UTF-8 names no model that exists; it is decoded with replacement characters so
    that the dead letter's detail shows what was asked.
    """
    for name, value in headers or ():
        if name == MODEL_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def model_header(model: str | None) -> Headers | None:
    """The headers of a request that names ``model`` by header (None: no headers)."""
    return None if model is None else [(MODEL_HEADER, model.encode())]


def source_headers(topic: str, partition: int, offsets: Sequence[int]) -> list[Headers]:
    """Headers of every output: its request's coordinates. The topic and partition tuples are shared by the
    batch's records (built once), only the offset's is per record; the offsets' digits come from one encoder
    call, cut apart in C."""
    if not offsets:
        return []
    topic_header = (SOURCE_TOPIC, topic.encode())
    partition_header = (SOURCE_PARTITION, b"%d" % partition)
    digits = _encode(offsets)[1:-1].split(b",")  # a JSON array of integers: digits and commas only
    return [[topic_header, partition_header, (SOURCE_OFFSET, text)] for text in digits]


def dead_letter_headers(error: DecodeError, source: SourceRef, own: Headers | None = None) -> Headers:
    """The headers of a dead letter (contract section 5): the request's own headers, then the contract's."""
    return [
        *(own or ()),
        (ERROR_HEADER, error.reason.encode()),
        (ERROR_DETAIL_HEADER, error.detail.encode("utf-8", "replace")),
        (SOURCE_TOPIC, source.topic.encode()),
        (SOURCE_PARTITION, str(source.partition).encode()),
        (SOURCE_OFFSET, str(source.offset).encode()),
    ]


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    """The bytes a record takes on the wire, to compare with a producer's or a topic's limit."""
    size = RECORD_OVERHEAD_BYTES + (len(key) if key else 0) + (len(value) if value else 0)
    for name, header_value in headers or ():
        size += len(name) + (len(header_value) if header_value else 0) + 8
    return size


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, max_bytes: int
) -> tuple[bytes | None, Headers]:
    """A dead letter that fits in ``max_bytes`` (contract section 5).

    Unchanged when it fits. Otherwise its value is cut to what fits, and headers ``streamer-original-size``
    and ``streamer-original-sha256`` say what the original was, so the request is still answered and the
    original can be matched by whoever keeps it. The key is never cut (it places and identifies the output);
    a key alone over the limit leaves an empty value, and the caller's producer refuses it.
    """
    if value is None or record_size(key, value, headers) <= max_bytes:
        return value, headers
    extra: Headers = [
        (ORIGINAL_SIZE_HEADER, str(len(value)).encode()),
        (ORIGINAL_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()),
    ]
    headers = headers + extra
    room = max_bytes - record_size(key, b"", headers)
    return value[: max(room, 0)], headers
