"""What ``streamer.client``'s thread makes of the records it reads: which are answers to calls in flight, and
the ``Outcome`` each one is.

Per record on the shared output topics: one msgspec decode of the ``id`` field (about a microsecond) and a
dict lookup; only an answer that is ours is decoded in full. A dead letter is matched by its id or, when its
value was cut or is not JSON, by its ``streamer-source-*`` headers (``router.Router.claim``). Records are
``confluent_kafka.Message`` or anything with its accessors (``topic``, ``value``, ``key``, ``headers``,
``error``). No locking here: the caller holds the router's lock around ``route_answers``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from confluent_kafka import KafkaError

from streamer.client.results import DeadLetter, Outcome, Prediction, Source, UnreadableAnswer
from streamer.client.router import Router, Waiter
from streamer.core.headers import ERROR_DETAIL_HEADER, ERROR_HEADER, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC

log = logging.getLogger(__name__)


class _Id(msgspec.Struct):
    id: str | None = None


read_id = msgspec.json.Decoder(_Id).decode
read_prediction = msgspec.json.Decoder(Prediction).decode
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def source_of(headers: list[tuple[str, bytes]] | None) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of the request an answer is for, from its headers; None if incomplete."""
    topic = partition = offset = None
    for name, value in headers or ():
        if name == SOURCE_TOPIC:
            topic = value
        elif name == SOURCE_PARTITION:
            partition = value
        elif name == SOURCE_OFFSET:
            offset = value
    if topic is None or partition is None or offset is None:
        return None
    try:
        return topic.decode(), int(partition), int(offset)
    except (ValueError, UnicodeDecodeError):
        return None


def header(headers: list[tuple[str, bytes]] | None, wanted: str) -> str:
    for name, value in headers or ():
        if name == wanted and value is not None:
            return value.decode("utf-8", "replace")
    return ""


def route_answers(router: Router, messages: Sequence[Any], requests_topic: str, dlq_topic: str) -> list[Waiter]:
    """Fill the slots of the answers among ``messages``; the waiters this completed."""
    complete: list[Waiter] = []
    for message in messages:
        if message.error() is not None:
            if message.error().code() != KafkaError._PARTITION_EOF:
                log.warning("scoring client: %s", message.error())
            continue
        value = message.value()
        try:
            ident = read_id(value).id
        except DECODE_ERRORS:
            ident = None
        if ident is not None and ident not in router:
            continue  # someone else's answer: the common case on a shared topic
        headers = message.headers()
        source = source_of(headers)
        if source is not None and source[0] != requests_topic:
            continue  # the answer to another topic's record (a feedback dead letter has ids too)
        entry = router.claim(ident, source)
        if entry is None:
            continue
        waiter, slot = entry
        result: Outcome
        if message.topic() == dlq_topic:
            source = waiter.sources[slot] or source
            result = DeadLetter(
                waiter.ids[slot],
                header(headers, ERROR_HEADER),
                header(headers, ERROR_DETAIL_HEADER),
                Source(*source) if source else None,
                message.key(),
                value,
            )
        else:
            try:
                result = read_prediction(value)
            except DECODE_ERRORS as exc:  # answered, so the call ends now instead of at its timeout
                log.warning("scoring client: unreadable prediction for %s: %s", waiter.ids[slot], exc)
                result = UnreadableAnswer(waiter.ids[slot], str(exc))
        if router.fill(waiter, slot, result):
            complete.append(waiter)
    return complete
