"""On-demand requests scored by the stream's path, concurrent ones together in one micro-batch, on the OIP
server's event loop.

Each HTTP request body becomes one request record (its model string in the ``streamer-model`` header, as a
Kafka producer would set it; the routing key from the request's ``parameters.key``) and is scored by the same
``score(records) -> ScoredBatch`` the worker runs on a consumed batch: the same decode, features, graphs,
routing (pins, canary, shadow) and model set. What comes back for the row is its prediction body or its
dead-letter reason.

Batching, all on the server's loop (``score`` is awaited by the request handlers): a request joins the open
``core.batching.Batcher`` (the worker's policy: ``batch_max_size``, ``batch_max_wait_ms``,
``batch_close_when_drained``) and waits on a future. A batch closes when it is full, at its deadline, or -- with
``batch_close_when_drained``, the default -- on the loop's next pass, once the requests that arrived together
have all joined it: a lone request never waits for batch-mates that are not coming, and under load the requests
that arrive while a batch is scored make the next batch together. A closed batch is scored right there, on the
loop, one at a time: ONNX Runtime releases the GIL inside its call, and no second Python thread competes with
the loop's I/O for the GIL (measured: a batching thread beside the loop cost throughput and p99, bench/oip.py).
``batch_max_size = 1`` turns batching off: each request is scored alone as it arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamer.core.batching import Batcher, BatchPolicy
from streamer.core.errors import SCORING_FAILED, DecodeError
from streamer.core.headers import model_header
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Records
from streamer.oip.codec import OipError

log = logging.getLogger(__name__)

# The topic and partition of on-demand requests in their records (a prediction without a request id is
# ``oip:0:<n>``, n counting the server's requests).
TOPIC = "oip"


@dataclass(frozen=True, slots=True)
class Answer:
    """A request's prediction (its JSON body, closed) or its dead-letter reason."""

    body: bytes | None
    error: DecodeError | None


Score = Callable[[Records], ScoredBatch]
_Request = tuple[int, bytes, str, bytes | None]  # offset, body, model string, key
BatchObserver = Callable[[int, float], None]  # (requests in the batch, seconds to score it)


class OnDemandScorer:
    """Micro-batches the requests of one event loop (the OIP server's); every method runs on that loop."""

    def __init__(self, score: Score, policy: BatchPolicy, on_batch: BatchObserver | None = None) -> None:
        self._score, self.policy, self._on_batch = score, policy, on_batch
        self._batcher = Batcher(policy)
        self._waiting: list[asyncio.Future[Answer]] = []  # the open batch's requests, in offset order
        self._offsets = itertools.count()
        self._flush: asyncio.TimerHandle | asyncio.Handle | None = None
        self._stopped = False

    @property
    def waiting(self) -> int:
        """Requests in the open batch."""
        return len(self._waiting)

    def stop(self) -> None:
        """Stop batching: the requests of the open batch are answered 503 at once, later ones refused."""
        self._stopped = True
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._batcher.flush()
        waiting, self._waiting = self._waiting, []
        for future in waiting:
            if not future.done():
                future.set_exception(OipError(503, "the server is stopping"))

    async def score(self, body: bytes, model: str, key: bytes | None = None) -> Answer:
        """Score one request body for ``model`` (a model string) with the requests that arrive with it."""
        if self._stopped:
            raise OipError(503, "the server is stopping")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append(future)
        offset = next(self._offsets)
        for batch in self._batcher.add(_records([(offset, body, model, key)]), time.monotonic()):
            self._run(batch)
        if self._waiting and self._flush is None:
            if self.policy.close_when_drained:
                self._flush = loop.call_soon(self._close_open)
            else:
                deadline = self._batcher.next_deadline()
                assert deadline is not None
                self._flush = loop.call_at(deadline, self._close_open)  # loop.time() is time.monotonic()
        return await future

    def _close_open(self) -> None:
        self._flush = None
        batch = self._batcher.poll(time.monotonic(), drained=True)
        if batch is not None:
            self._run(batch)
        if self._waiting:  # not due yet (a deadline run early): look again at the deadline
            deadline = self._batcher.next_deadline()
            assert deadline is not None
            self._flush = asyncio.get_running_loop().call_at(deadline, self._close_open)

    def _run(self, batch: Records) -> None:
        """Score a closed batch (its requests are the oldest waiting ones) and answer each of them."""
        futures, self._waiting = self._waiting[: len(batch)], self._waiting[len(batch) :]
        try:
            answers = self._answers(batch)
        except Exception as exc:  # a bug, not bad input: every request of the batch learns it
            log.exception("on-demand batch failed")
            answers = [Answer(None, DecodeError(SCORING_FAILED, repr(exc)))] * len(batch)
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():  # else its request gave up (the server is stopping)
                future.set_result(answer)

    def _answers(self, records: Records) -> list[Answer]:
        started = time.perf_counter()
        scored = self._score(records)
        if self._on_batch is not None:
            self._on_batch(len(records), time.perf_counter() - started)
        answers = []
        for row, body in enumerate(scored.bodies):
            if body is not None:
                answers.append(Answer(body + b"}", None))
            else:
                error = scored.errors.get(row) or DecodeError(SCORING_FAILED, "no prediction was produced")
                answers.append(Answer(None, error))
        return answers


def _records(requests: list[_Request]) -> Records:
    now_ms = int(time.time() * 1000)
    return Records(
        TOPIC,
        0,
        [offset for offset, _, _, _ in requests],
        [key for _, _, _, key in requests],
        [body for _, body, _, _ in requests],
        [now_ms] * len(requests),
        [model_header(model) for _, _, model, _ in requests],
    )
