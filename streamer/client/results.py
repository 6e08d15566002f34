"""What a scoring call returns or raises: a ``Prediction``, a ``DeadLetter``, a ``ScoreTimeout``.

A ``Prediction`` is the envelope's own declaration (``core.outputs.Prediction``: every field, ``decision`` and
``reasons`` included, decoded straight from the record's value and validated by it); an answer that is not one
is an ``UnreadableAnswer``.

A dead letter is an answer, not a transport failure: ``score`` raises it (typed, with the reason and where the
request was), ``score_many`` returns it in the request's slot (like ``asyncio.gather(return_exceptions=True)``),
so that one bad request never hides the others' predictions.
"""

from __future__ import annotations

from typing import Any

from streamer.core.errors import StreamerError
from streamer.core.outputs import Prediction, Source


class DeadLetter(StreamerError):
    """The worker could not score the request and wrote it to the dead-letter topic (contract section 5).

    ``reason`` is the ``streamer-error`` header (one of the reason table, ``core.errors.REASONS``: ``schema``,
    ``unknown-model``, ``enrichment-failed``...), ``detail`` the human sentence; ``source`` where the request was read;
    ``key`` and ``value`` the request's bytes as the dead letter carries them."""

    def __init__(
        self,
        id: str,
        reason: str,
        detail: str,
        source: Source | None,
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> None:
        super().__init__(f"request {id}: dead letter ({reason}): {detail}")
        self.id = id
        self.reason = reason
        self.detail = detail
        self.source = source
        self.key = key
        self.value = value

    @property
    def offset(self) -> int | None:
        return None if self.source is None else self.source.offset

    def __reduce__(self) -> Any:
        return (DeadLetter, (self.id, self.reason, self.detail, self.source, self.key, self.value))


class DeliveryFailed(StreamerError):
    """The request never reached the request topic (the producer gave up): no answer will come."""

    def __init__(self, id: str, detail: str) -> None:
        super().__init__(f"request {id}: not delivered: {detail}")
        self.id = id
        self.detail = detail


class UnreadableAnswer(StreamerError):
    """The answer to the request arrived but could not be decoded (not a prediction envelope): the request was
    answered, so waiting longer would not help."""

    def __init__(self, id: str, detail: str) -> None:
        super().__init__(f"request {id}: unreadable answer: {detail}")
        self.id = id
        self.detail = detail


class ClientClosed(StreamerError):
    """The client was closed while the call waited."""


class ScoreTimeout(TimeoutError):
    """No answer within the timeout. ``missing``: the ids without one; ``results``: the slots of a
    ``score_many`` call (None where the answer is missing), so that what did arrive is not lost."""

    def __init__(self, missing: list[str], results: list[Any], timeout_s: float) -> None:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        super().__init__(f"no answer within {timeout_s:g} s for {len(missing)} of {len(results)} request(s): {shown}")
        self.missing = missing
        self.results = results
        self.timeout_s = timeout_s


Outcome = Prediction | DeadLetter | DeliveryFailed | UnreadableAnswer
